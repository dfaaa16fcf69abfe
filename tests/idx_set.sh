# Tiny MNIST-format data sets for the shell tests (sourced, not run):
#   idx_set PREFIX COUNT SIDE random|class
# writes PREFIX-images-idx3-ubyte (COUNT images of SIDE x SIDE bytes) and
# PREFIX-labels-idx1-ubyte (image i has label i % 10). "random" fills the
# pixels from /dev/urandom (a set to train on for a few steps); "class" gives
# every pixel of image i the value 16 * (i % 10), so the label is learnable.

be32() { # N as 4 big-endian bytes
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) \
        $(($1 >> 8 & 255)) $(($1 & 255)))"
}

idx_set() {
    local prefix=$1 n=$2 side=$3 fill=$4 i
    { printf '\0\0\010\003'; be32 "$n"; be32 "$side"; be32 "$side"
      if [ "$fill" = random ]; then
          head -c $((n * side * side)) /dev/urandom
      else
          for ((i = 0; i < n; i++)); do
              head -c $((side * side)) /dev/zero | tr '\0' "\\$(printf %03o $((16 * (i % 10))))"
          done
      fi
    } >"$prefix-images-idx3-ubyte"
    { printf '\0\0\010\001'; be32 "$n"
      for ((i = 0; i < n; i++)); do printf "\\$(printf %03o $((i % 10)))"; done
    } >"$prefix-labels-idx1-ubyte"
}
