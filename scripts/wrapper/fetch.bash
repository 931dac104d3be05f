
# wal-fetch: served by Node for now (the restore side of the shell fast path is built separately).
wv_fetch_prepare() { return 0; }
wv_fetch_answer() { return 1; }
