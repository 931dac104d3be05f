// Which repository a URL (and endpoint, profile) names: the key of its spool directory.

/**
 * Everything that decides which objects a repository URL reaches: the same bucket name on another
 * endpoint (or through another profile, which may name its own endpoint) is another repository, and
 * must not share a manifest cache, push records or prefetch workers with the first. Without an
 * endpoint or profile the key is the URL itself, so spools written before keep their directory.
 * Credentials and region are left out: they change who may read, not what a key names.
 */
export function repoCacheKey(url: string, s3: { endpoint?: string | undefined; profile?: string | undefined } = {}): string {
  const parts = [url];
  if (s3.endpoint) parts.push(`endpoint=${normalizeEndpoint(s3.endpoint)}`);
  if (s3.profile) parts.push(`profile=${s3.profile}`);
  return parts.join(' ');
}

/** Spellings of one endpoint give one key (case, default port, trailing slash); user-info is dropped. */
function normalizeEndpoint(endpoint: string): string {
  try {
    const u = new URL(endpoint);
    return `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}`;
  } catch {
    return endpoint.trim();
  }
}
