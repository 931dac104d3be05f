
# wal-push of a file the look-ahead already stored (src/push-ahead/wrapper-acks.ts writes the ack):
#   <wv_dir>/push/<NAME>  lines: walvault-ack 1 | NAME | dev ino size mtime.ns ctime.ns of the file,
#   the same before and after the read that hashed it, and older than the racy margin | SHA-256 |
#   repository (for the log) | the object's path for file:// (it must still be there), else - |
#   log level | the context lines.
# Exit 0 needs: that ack, owned by this user in private directories, for this name, with this
# context, and the file at PATH with exactly that identity. Anything else: Node's wal-push.
wv_push_prepare() { # PATH [NAME]
  (($# == 1 || $# == 2)) || return 1
  wv_name=${2:-${1##*/}}
  [[ $wv_name =~ ^[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?$|^[0-9A-F]{8}\.history$ ]] || return 1
  wv_read_ack push
  wv_targets+=("$1" "$wv_dir/push/$wv_name")
  [[ ${wv_ack[5]-} == /* ]] && wv_targets+=("${wv_ack[5]}")
  return 0
}

wv_push_answer() { # PATH [NAME]
  local path=$1
  wv_ack_valid push 'walvault-ack 1' || return 1
  wv_owned_file "$path" && wv_identity "$path" && [[ $wv_id == "${wv_ack[2]}" ]] || return 1
  [[ ${wv_ack[5]} == - ]] || wv_object_there "${wv_ack[5]}" || return 1
  if [[ ${wv_ack[6]} == info || ${wv_ack[6]} == debug ]]; then
    wv_elapsed
    wv_log info "$wv_name was uploaded ahead to ${wv_ack[4]} and is unchanged (SHA-256 ${wv_ack[3]:0:16}... verified: identity as when it was hashed, checked by the wrapper); nothing to do ($wv_took)"
  fi
  return 0
}

# A file:// object need not be ours (a shared backup directory): a regular file is enough, as for Node.
wv_object_there() { local f=(${wv_st[$1]-}); ((${#f[@]} == 7 && (16#${f[6]} & 0xF000) == 0x8000)); }
