/** Everything the S3 driver needs; built by s3OptionsFrom (storage/open.ts) from the resolved configuration. */
export interface S3Options {
  bucket: string;
  /** Key prefix inside the bucket, without leading or trailing slash ('' for the bucket root). */
  prefix: string;
  /** Custom endpoint (radosgw, Swift, MinIO...); undefined = AWS. */
  endpoint?: string;
  region?: string;
  forcePathStyle: boolean;
  /** Shared config/credentials profile; undefined = SDK default chain. */
  profile?: string;
  /** Static credentials (config file or flags); undefined = SDK default credential chain. */
  accessKeyId?: string;
  secretAccessKey?: string;
  sessionToken?: string;
  /** PEM file with extra CA certificates for TLS to the endpoint. */
  caBundle?: string;
  storageClass?: string;
  /** Server-side encryption: 'AES256' or 'aws:kms'. */
  sse?: string;
  sseKmsKeyId?: string;
  /**
   * S3 Object Lock retention put on every PutObject and CreateMultipartUpload: the mode and how many
   * days from the moment of each request. Both or neither (config validation).
   */
  objectLock?: { mode: 'governance' | 'compliance'; days: number };
  /** 'when_required' (default, safe for every S3-compatible store) or 'when_supported' (SDK default). */
  checksumMode: 'when_required' | 'when_supported';
  /** 'auto': If-None-Match where the probe finds it enforced, else HEAD then PUT; 'on': refuse a store that does not enforce it; 'off': HEAD then PUT. */
  conditionalWrites: 'auto' | 'on' | 'off';
  /** TCP connect timeout, ms. */
  connectTimeoutMs: number;
  /** Socket idle timeout (no bytes either way), ms. */
  idleTimeoutMs: number;
  /** Multipart upload part size (bytes) and parallel parts, for base backups. */
  partSize: number;
  queueSize: number;
  /**
   * Spool file remembering what each store (endpoint and bucket) does with If-None-Match, so the
   * probe runs once per store, not once per wal-push. Loss costs one probe.
   */
  capabilityFile?: string;
  /** ListObjectsV2 MaxKeys per page; undefined = the store's default (1000). Tests use tiny pages. */
  listPageSize?: number;
}
