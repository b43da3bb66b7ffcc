/** Builds the configured blob store: the disk directory or an S3-compatible bucket. */
import type { Config } from '../config.js';
import type { BlobStore } from './blob-store.js';
import { DiskBlobStore } from './disk.js';

/**
 * The blob store the configuration names (no network traffic until first use). The S3 module
 * (and the AWS SDK, some 25 MiB of resident memory once loaded) is imported only for
 * STORAGE=s3, so the default disk server does not carry it.
 */
export async function createBlobStore(config: Config): Promise<BlobStore> {
  const s = config.storage;
  if (s.kind === 'disk') return new DiskBlobStore(config.uploadsDir);
  const { S3BlobStore, createS3Client } = await import('./s3.js');
  const client = createS3Client({
    region: s.region,
    endpoint: s.endpoint,
    forcePathStyle: s.forcePathStyle,
    maxAttempts: s.maxAttempts,
    connectTimeoutMs: s.connectTimeoutMs,
    socketTimeoutMs: s.socketTimeoutMs,
  });
  return new S3BlobStore(client, { bucket: s.bucket, prefix: s.prefix, partSize: s.partSize, queueSize: s.queueSize, sse: s.sse });
}

/** How the store is named in messages: a directory or s3://bucket/prefix at an endpoint. */
export function describeStore(config: Config): string {
  const s = config.storage;
  if (s.kind === 'disk') return config.uploadsDir;
  return `s3://${s.bucket}/${s.prefix} at ${s.endpoint ?? `AWS ${s.region}`}`;
}
