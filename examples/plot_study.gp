# Learning curves of examples/dropout_study.c: train and test loss per epoch,
# one colour per variant (mean over seeds), one panel per training-subset
# size. Reads DIR/curves.dat and DIR/curves_titles.txt, writes DIR/curves.png.
#   gnuplot -e "dir='build/study'" examples/plot_study.gp
# Train loss is measured in eval mode on the training subset (no dropout), so
# it is comparable across variants; both curves use the same images every
# epoch: the first 1,000 of the subset and the first 1,000 test images (the
# study's final numbers use the whole subset and all 10,000 test images).
if (!exists("dir")) dir = "build/study"
data = dir."/curves.dat"
titles = dir."/curves_titles.txt"

stats data using 1 nooutput
panels = STATS_blocks

set terminal pngcairo size (panels > 1 ? 1200 : 700), 480 font "sans,10"
set output dir."/curves.png"
set multiplot layout 1, panels
set logscale y
set format y "%g"
set xlabel "epoch"
set xtics 1 out nomirror
set autoscale xfix
set offsets 0.3, 0.3, 0, 0
set ylabel "cross-entropy loss (log scale)"
set key bottom left box opaque
set grid ytics mytics xtics lc rgb "#dddddd"
set style line 1 lc rgb "#555555" lw 2
set style line 2 lc rgb "#d95f02" lw 2
set style line 3 lc rgb "#1b9e77" lw 2

do for [i = 0:panels - 1] {
    set title system(sprintf("sed -n %dp '%s'", i + 1, titles))
    plot data index i using 1:3 with lines ls 1 title "none, test", \
         ""   index i using 1:5 with lines ls 2 title "element-wise, test", \
         ""   index i using 1:7 with lines ls 3 title "spatial, test", \
         ""   index i using 1:2 with lines ls 1 dt 2 title "none, train", \
         ""   index i using 1:4 with lines ls 2 dt 2 title "element-wise, train", \
         ""   index i using 1:6 with lines ls 3 dt 2 title "spatial, train"
}
unset multiplot
