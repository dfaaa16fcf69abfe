# Pictures of examples/dropout_study2.c. Reads DIR/noise.dat, DIR/stages.dat
# and DIR/accuracy.dat (one block per data set: MNIST, then Fashion-MNIST
# when it ran), writes DIR/noise.png, DIR/stages.png and DIR/accuracy.png.
#   gnuplot -e "dir='build/study2'" examples/plot_study2.gp
# Error bars: one standard deviation over seeds.
if (!exists("dir")) dir = "build/study2"
noise = dir."/noise.dat"
acc = dir."/accuracy.dat"
stages = dir."/stages.dat"
stats acc using 1 nooutput
blocks = STATS_blocks
dname(i) = i == 0 ? "MNIST" : "Fashion-MNIST"

set style line 1 lc rgb "#555555" lw 2 pt 7
set style line 2 lc rgb "#d95f02" lw 2 pt 7
set style line 3 lc rgb "#1b9e77" lw 2 pt 7
set grid lc rgb "#dddddd"
set key top left box opaque

# noise.png: the share of dropout's relative noise that reaches conv2d_2's
# output, and the relative noise at the logits, against the neighbour
# correlation of conv2d_1's output (28, 56, 112 px from left to right).
set terminal pngcairo size 1200, 480 font "sans,10"
set output dir."/noise.png"
set multiplot layout 1, 2
set xlabel "correlation of adjacent values of conv2d\\_1's output (28, 56, 112 px)"
set ylabel "surviving share: noise out / noise in"
set title "Dropout noise reaching conv2d\\_2's output (kernel only)"
set yrange [0:*]
plot for [i = 0:blocks - 1] noise index i using 2:4:5 with yerrorlines ls 2 dt i+1 \
         title "element-wise, ".dname(i), \
     for [i = 0:blocks - 1] noise index i using 2:6:7 with yerrorlines ls 3 dt i+1 \
         title "spatial, ".dname(i)
set ylabel "E||z_{mask} - z||^2 / ||z||^2 at the logits z"
set title "Dropout noise reaching the logits"
plot for [i = 0:blocks - 1] noise index i using 2:12:13 with yerrorlines ls 2 dt i+1 \
         title "element-wise, ".dname(i), \
     for [i = 0:blocks - 1] noise index i using 2:14:15 with yerrorlines ls 3 dt i+1 \
         title "spatial, ".dname(i)
unset multiplot

# stages.png: per data set, the relative noise at each stage after the
# dropout, per kind and image size; where element-wise noise grows.
set terminal pngcairo size 1200, 480 font "sans,10"
set output dir."/stages.png"
set multiplot layout 1, blocks
set bmargin 5
set logscale y
set yrange [*:*]
set autoscale y
set xrange [-0.3:5.3]
set xtics ("conv2d\\_1\n(noise in)" 0, "conv2d\\_2\nbefore ReLU" 1, "conv2d\\_2\nafter ReLU" 2, \
           "max\npooling" 3, "dense\\_1" 4, "logits" 5)
set xlabel ""
set ylabel "relative noise E||z_{mask} - z||^2 / ||z||^2"
set key bottom left box opaque
do for [i = 0:blocks - 1] {
    set title dname(i).": dropout noise along the network"
    plot for [r = 0:2] stages index i using 1:(column(2 + 2 * r)) with linespoints ls 2 dt r+1 \
             title sprintf("element-wise, %d px", 28 * 2**r), \
         for [r = 0:2] stages index i using 1:(column(8 + 2 * r)) with linespoints ls 3 dt r+1 \
             title sprintf("spatial, %d px", 28 * 2**r)
}
unset multiplot
unset logscale y
set bmargin -1
set key top left box opaque
set xtics autofreq
set xrange [*:*]

# accuracy.png: per data set, test accuracy and train-test gap against the
# image size, for the three variants.
set terminal pngcairo size 1200, 440 * blocks font "sans,10"
set output dir."/accuracy.png"
set multiplot layout blocks, 2
set logscale x 2
set xtics ("28" 28, "56" 56, "112" 112)
set xrange [24:130]
set xlabel "image size (px): 28x28 images upsampled x1, x2, x4"
set autoscale y
set yrange [*:*]
do for [i = 0:blocks - 1] {
    set title dname(i).": test accuracy"
    set ylabel "test accuracy (%)"
    plot acc index i using ($1 * 0.97):2:3 with yerrorlines ls 1 title "none", \
         ""  index i using 1:6:7 with yerrorlines ls 2 title "element-wise", \
         ""  index i using ($1 * 1.03):10:11 with yerrorlines ls 3 title "spatial"
    set title dname(i).": train - test gap"
    set ylabel "gap (percentage points)"
    plot acc index i using ($1 * 0.97):4:5 with yerrorlines ls 1 title "none", \
         ""  index i using 1:8:9 with yerrorlines ls 2 title "element-wise", \
         ""  index i using ($1 * 1.03):12:13 with yerrorlines ls 3 title "spatial"
}
unset multiplot
