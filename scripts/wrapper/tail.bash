
# The calls answered here; everything else is Node's.
wv_fast() {
  wv_parse "$@" || return 1
  case $wv_cmd in
    wal-push | wal-fetch) ;;
    *) return 1 ;;
  esac
  wv_locate || wv_dir=''
  wv_targets=("$wv_aws_config" "$wv_aws_credentials")
  [[ -n $wv_config ]] && wv_targets+=("$wv_config")
  [[ -n $wv_dir ]] && wv_targets+=("$wv_boot" "$wv_boot/fast" "$wv_dir" "$wv_dir/push" "$wv_dir/fetch")
  local kind=${wv_cmd#wal-}
  wv_${kind}_prepare "${wv_pos[@]}" || return 1
  wv_stat "${wv_targets[@]}"
  wv_make_context || return 1
  # Node writes acknowledgements for this context (and only into this directory).
  [[ -n $wv_dir ]] && export WALVAULT_WRAPPER_CONTEXT="$wv_context" WALVAULT_WRAPPER_DIR="$wv_dir"
  wv_${kind}_answer "${wv_pos[@]}"
}

unset WALVAULT_WRAPPER_CONTEXT WALVAULT_WRAPPER_DIR
wv_fast "$@" && exit 0
# Node for the per-file commands: glibc's default of one malloc arena per thread (zstd runs in the
# libuv pool) and its lazy return of freed memory cost the look-ahead ~5-10 MiB of RSS; the
# operator's own settings win.
case $wv_cmd in
  wal-push | wal-fetch)
    [[ -v MALLOC_ARENA_MAX ]] || export MALLOC_ARENA_MAX=1
    [[ -v MALLOC_MMAP_THRESHOLD_ ]] || export MALLOC_MMAP_THRESHOLD_=131072
    [[ -v MALLOC_TRIM_THRESHOLD_ ]] || export MALLOC_TRIM_THRESHOLD_=131072
    ;;
esac
exec "$wv_node" "$wv_main" "$@"
