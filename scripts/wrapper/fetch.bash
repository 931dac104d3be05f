
# wal-fetch of a segment the prefetch worker already downloaded and verified, handed to PostgreSQL
# without starting Node. The worker (src/prefetch/worker.ts, src/prefetch/fetch-ack.ts) writes:
#   <wv_dir>/fetch/<NAME>  lines: walvault-fetch-ack 1 | NAME | the prefetched file (absolute path in
#   the prefetch spool) | its dev ino size mtime.ns ctime.ns, from stat() right after the worker
#   verified the bytes against the repository's SHA-256, fsynced the file and renamed it into place
#   | that SHA-256 | log level | the worker's pid | the context lines.
# Exit 0 needs: that ack, owned by this user in private directories, for this segment name, with this
# context, from a worker still running (its acks are removed when it stops; a killed one's are not
# used: kill -0 of its pid, a builtin; only a hint, a recycled pid passes it: the context and the
# identity are the proof); the prefetched file owned by this user, not writable by group or others, with exactly the
# recorded identity and on the file system of %p's directory. Then: one hard link of it to %p (ln -fT
# replaces %p atomically: PostgreSQL never sees a partial file), a check that %p is that very inode
# (device, inode, size, mtime: a file swapped in between the stat and the link is refused), and an
# fsync of %p's directory (the content was fsynced by the worker). Anything else, including every
# miss: Node's wal-fetch, which asks the worker or the repository. "Not found" never comes from here.
#
# Why an equal identity means the verified bytes (README "The shell fast path" for the general
# argument): the worker writes the file itself under a temp name in its private spool, verifies
# while writing, fsyncs it and renames it into place; it records the identity after that last
# change. Any later write, truncate, chmod, link or rename moves the file's ctime, which user space
# cannot set back, and the inode number tells a re-created file apart. The context binds the ack to
# the repository configuration the worker fetched from (cwd, user, options, config file identity,
# environment): another repository, another config file or environment is never served from it.
# After the hand-over the spool keeps its link (PostgreSQL asks for the last segment again at the
# end of recovery); its ctime has moved, so the ack no longer matches: the worker notices, drops it
# and prefetches further. Once the worker has answered that the next segment is missing, it copies
# the last one anew (hashed against its record, fsynced: a new inode, a new ack) for those asks;
# until then a second ask goes to Node, which re-hashes the spool's copy.
wv_fetch_prepare() { # NAME PATH
  (($# == 2)) || return 1
  wv_name=$1
  # Every WAL file name gets a context (Node hands it to the prefetch worker the first call starts,
  # typically for a timeline history file); only segments are ever answered here.
  [[ $wv_name =~ ^[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?$|^[0-9A-F]{8}\.history$ ]] || return 1
  wv_target=$2
  wv_target_dir=.
  [[ $wv_target == */* ]] && wv_target_dir=${wv_target%/*}
  [[ -n $wv_target_dir ]] || wv_target_dir=/
  wv_ack=()
  [[ $wv_name =~ ^[0-9A-F]{24}$ ]] && wv_read_ack fetch
  # "dir/." so that a symlinked pg_wal (initdb --waldir) is stat'ed as the directory it points to
  wv_targets+=("$wv_dir/fetch/$wv_name" "$wv_target_dir/.")
  [[ ${wv_ack[2]-} == /* ]] && wv_targets+=("${wv_ack[2]}")
  return 0
}

wv_fetch_answer() { # NAME PATH
  local file=${wv_ack[2]-}
  [[ -n $wv_dir && $wv_name =~ ^[0-9A-F]{24}$ && $file == /* ]] && wv_ack_valid fetch 'walvault-fetch-ack 1' || return 1
  [[ ${wv_ack[6]} =~ ^[1-9][0-9]{0,9}$ ]] && kill -0 "${wv_ack[6]}" 2>/dev/null || return 1
  wv_owned_file "$file" && wv_identity "$file" && [[ $wv_id == "${wv_ack[3]}" ]] || return 1
  local f=(${wv_st[$file]}) d=(${wv_st[$wv_target_dir/.]-})
  (((16#${f[6]} & 8#022) == 0)) || return 1
  # Same file system as %p's directory (a hard link); across file systems Node copies and hashes.
  ((${#d[@]} == 7 && (16#${d[6]} & 0xF000) == 0x4000 && d[0] == f[0])) || return 1
  ln -fT -- "$file" "$wv_target" 2>/dev/null || return 1
  local now
  now=$(LC_ALL=C stat -c '%d %i %s %.9Y' -- "$wv_target" 2>/dev/null)
  if [[ $now != "${f[0]} ${f[1]} ${f[2]} ${f[3]}" ]]; then
    rm -f -- "$wv_target"
    return 1
  fi
  sync -- "$wv_target_dir" 2>/dev/null || return 1
  if [[ ${wv_ack[5]} == info || ${wv_ack[5]} == debug ]]; then
    wv_elapsed
    local size=${f[2]}
    wv_log info "fetched $wv_name from the prefetch spool ($((size / 1048576)).$((size % 1048576 * 10 / 1048576)) MiB, verified SHA-256 ${wv_ack[4]:0:16}... by the prefetch worker, unchanged since: identity checked by the wrapper, $wv_took)"
  fi
  return 0
}
