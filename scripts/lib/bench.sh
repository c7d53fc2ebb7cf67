# Shared by the benchmark scripts (sourced).

# Median wall time of RUNS runs, in milliseconds.
median_ms() {
  local times=()
  for _ in $(seq "$RUNS"); do
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null
    end=$(date +%s%N)
    times+=($(( (end - start) / 1000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}

# Median wall times of two commands run RUNS times each, alternately (A, B, A, B, …), in
# milliseconds, printed as "A B": drift on a shared machine then hits both alike, so their ratio
# holds. Usage: median_pair_ms "command a" "command b" (each a string for eval).
median_pair_ms() {
  local a=() b=() start
  for _ in $(seq "$RUNS"); do
    start=$(date +%s%N); eval "$1" >/dev/null; a+=($(( ($(date +%s%N) - start) / 1000 )))
    start=$(date +%s%N); eval "$2" >/dev/null; b+=($(( ($(date +%s%N) - start) / 1000 )))
  done
  local ma mb
  ma=$(printf '%s\n' "${a[@]}" | sort -n | awk '{x[NR]=$1} END {printf "%.1f", x[int((NR+1)/2)]/1000}')
  mb=$(printf '%s\n' "${b[@]}" | sort -n | awk '{x[NR]=$1} END {printf "%.1f", x[int((NR+1)/2)]/1000}')
  echo "$ma $mb"
}
