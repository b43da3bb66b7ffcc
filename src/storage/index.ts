/** Builds the configured blob store: the disk directory or an S3-compatible bucket. */
import type { Config } from '../config.js';
import type { BlobStore } from './blob-store.js';
import { FileAuditHeads, type AuditHead, type AuditHeadStore } from './audit-heads.js';
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
  return new S3BlobStore(s3ClientFor(createS3Client, s), { bucket: s.bucket, prefix: s.prefix, partSize: s.partSize, queueSize: s.queueSize, sse: s.sse });
}

type S3Settings = Extract<Config['storage'], { kind: 's3' }>;

function s3ClientFor(create: typeof import('./s3.js').createS3Client, s: S3Settings) {
  return create({
    region: s.region,
    endpoint: s.endpoint,
    forcePathStyle: s.forcePathStyle,
    maxAttempts: s.maxAttempts,
    connectTimeoutMs: s.connectTimeoutMs,
    socketTimeoutMs: s.socketTimeoutMs,
  });
}

/**
 * Where the audit head lives for this configuration: on disk the file `DATA_DIR/audit-head`
 * as always; with STORAGE=s3 objects beside the blobs (`<prefix>audit-head/<writer>.json`), so
 * that every instance and every `sfs` run sees the same heads without a shared disk. `store`
 * lends its S3 client when it is the configured S3 store; otherwise the SDK is loaded (and a
 * client made) only on first use, so building one costs nothing on a command that never
 * records an event.
 */
export function auditHeadsFor(config: Config, store?: BlobStore): AuditHeadStore {
  const s = config.storage;
  if (s.kind === 'disk') return new FileAuditHeads(config.auditHeadFile);
  if (store?.auditHeads) return store.auditHeads();
  let real: Promise<AuditHeadStore> | undefined;
  const get = () =>
    (real ??= import('./s3.js').then(({ S3BlobStore, createS3Client }) =>
      new S3BlobStore(s3ClientFor(createS3Client, s), { bucket: s.bucket, prefix: s.prefix, partSize: s.partSize, queueSize: s.queueSize, sse: s.sse }).auditHeads(),
    ));
  return {
    readAll: async () => (await get()).readAll(),
    write: async (head: AuditHead) => (await get()).write(head),
    replace: async (head: AuditHead | null) => (await get()).replace(head),
    describe: () => `s3://${s.bucket}/${s.prefix}audit-head/`,
  };
}

/** How the store is named in messages: a directory or s3://bucket/prefix at an endpoint. */
export function describeStore(config: Config): string {
  const s = config.storage;
  if (s.kind === 'disk') return config.uploadsDir;
  return `s3://${s.bucket}/${s.prefix} at ${s.endpoint ?? `AWS ${s.region}`}`;
}
