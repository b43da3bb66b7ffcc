/**
 * S3-compatible object-store blob store (AWS S3, Ceph RGW, MinIO, Garage, Swift's s3api, R2):
 * objects under `<prefix><2 hex>/<id>.enc`. Only ciphertext ever reaches it. A blob is written
 * with a multipart upload (or one PUT when it fits in one part), so an object appears only
 * once the whole upload completed; any failure aborts the multipart upload.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type S3ClientConfig,
  type ServerSideEncryption,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { BLOB_ID_PATTERN, type BlobStat, type BlobStore, type StoreEntry } from './blob-store.js';
import { headText, parseHead, type AuditHead, type AuditHeadStore } from './audit-heads.js';
import { PARTIAL_DIR, PartialMissingError, type Checkpoint, type PartialStore, type PartialWriter } from './partial.js';

const ID_PATTERN = BLOB_ID_PATTERN;
const KEY_PATTERN = /^([0-9a-f]{2})\/([0-9a-f]{32}(?:\.g[1-9][0-9]{0,8})?)\.enc$/;
/** Folder (under the prefix) of the audit heads, one object per writer. */
export const AUDIT_HEAD_DIR = 'audit-head/';
/** A head object of another writer untouched this long, and behind ours, may be pruned. */
export const AUDIT_HEAD_STALE_MS = 3600_000;
/** S3's smallest multipart part (except the last). */
export const MIN_PART_SIZE = 5 * 1024 * 1024;

export interface S3StoreOptions {
  bucket: string;
  /** Key prefix, '' or ending in '/'. */
  prefix: string;
  /** Bytes per multipart part; memory per upload is about partSize × queueSize. */
  partSize: number;
  /** Parts uploaded in parallel per blob. */
  queueSize: number;
  /** Server-side encryption requested on every object, as defence in depth on top of ours. */
  sse?: { mode: 'AES256' } | { mode: 'aws:kms'; kmsKeyId?: string };
}

export interface S3ClientSettings {
  region: string;
  endpoint?: string;
  forcePathStyle: boolean;
  maxAttempts: number;
  connectTimeoutMs: number;
  socketTimeoutMs: number;
}

/**
 * An S3 client configured deliberately: bounded retries, connect and socket timeouts, and the
 * SDK's extra CRC checksums only where S3 requires them (every chunk is already authenticated
 * by AES-GCM and the whole file by SHA-256; some stores, e.g. Swift's s3api, refuse the
 * aws-chunked bodies those checksums bring). Credentials come from the standard AWS chain.
 */
export function createS3Client(s: S3ClientSettings): S3Client {
  const cfg: S3ClientConfig = {
    region: s.region,
    forcePathStyle: s.forcePathStyle,
    maxAttempts: s.maxAttempts,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: { connectionTimeout: s.connectTimeoutMs, requestTimeout: s.socketTimeoutMs, throwOnRequestTimeout: true },
  };
  if (s.endpoint) cfg.endpoint = s.endpoint;
  return new S3Client(cfg);
}

/** Why a store cannot be used, as one line an operator can act on. */
export class StoreUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreUnavailableError';
  }
}

/** HTTP status of an SDK error, if any. */
function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

function isNotFound(err: unknown): boolean {
  const name = (err as { name?: string }).name;
  return name === 'NoSuchKey' || name === 'NotFound' || statusOf(err) === 404;
}

/** Flattens the vault's batches into one stream of buffers, counting bytes. */
async function* flatten(source: AsyncIterable<Buffer[]>, count: { bytes: number }): AsyncGenerator<Buffer> {
  for await (const pieces of source) {
    for (const p of pieces) {
      if (p.length === 0) continue;
      count.bytes += p.length;
      yield p;
    }
  }
}

export class S3BlobStore implements BlobStore {
  constructor(
    private readonly client: S3Client,
    private readonly opts: S3StoreOptions,
  ) {
    if (opts.prefix !== '' && !opts.prefix.endsWith('/')) throw new RangeError('S3 prefix must be empty or end with /');
    if (opts.partSize < MIN_PART_SIZE) throw new RangeError(`S3 part size must be at least ${MIN_PART_SIZE} bytes`);
  }

  /** Object key of a blob; ids are validated so a key can never be steered elsewhere. */
  keyOf(id: string): string {
    if (!ID_PATTERN.test(id)) throw new Error('invalid blob id');
    return `${this.opts.prefix}${id.slice(0, 2)}/${id}.enc`;
  }

  private sseParams(): { ServerSideEncryption?: ServerSideEncryption; SSEKMSKeyId?: string } {
    const sse = this.opts.sse;
    if (!sse) return {};
    if (sse.mode === 'AES256') return { ServerSideEncryption: 'AES256' };
    return { ServerSideEncryption: 'aws:kms', ...(sse.kmsKeyId ? { SSEKMSKeyId: sse.kmsKeyId } : {}) };
  }

  async put(id: string, source: AsyncIterable<Buffer[]>): Promise<{ bytes: number }> {
    const count = { bytes: 0 };
    const body = Readable.from(flatten(source, count), { objectMode: false, highWaterMark: 1024 * 1024 });
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.opts.bucket, Key: this.keyOf(id), Body: body, ContentType: 'application/octet-stream', ...this.sseParams() },
      partSize: this.opts.partSize,
      queueSize: this.opts.queueSize,
      // Parts of a failed upload are aborted, never left for a later complete.
      leavePartsOnError: false,
    });
    try {
      await upload.done();
      return { bytes: count.bytes };
    } catch (err) {
      body.destroy();
      // done() aborts the multipart upload itself; abort again in case the failure came
      // from the source before the SDK noticed (abort of a finished upload is harmless).
      await upload.abort().catch(() => {});
      throw err;
    }
  }

  getRange(id: string, start: number, end: number): Readable {
    const { client } = this;
    const params = { Bucket: this.opts.bucket, Key: this.keyOf(id), Range: `bytes=${start}-${end}` };
    async function* read(): AsyncGenerator<Buffer> {
      const r = await client.send(new GetObjectCommand(params));
      const body = r.Body as Readable | undefined;
      if (!body) return;
      for await (const chunk of body) yield chunk as Buffer;
    }
    return Readable.from(read(), { objectMode: false, highWaterMark: 256 * 1024 });
  }

  async readSmall(id: string, expected: number): Promise<Buffer | null> {
    try {
      // One byte more than expected, so a longer (appended-to) blob shows.
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.opts.bucket, Key: this.keyOf(id), Range: `bytes=0-${expected}` }));
      return Buffer.from(await r.Body!.transformToByteArray());
    } catch (err) {
      if (isNotFound(err)) return null;
      // A range on an empty object is unsatisfiable: the object exists and holds nothing.
      if (statusOf(err) === 416) return Buffer.alloc(0);
      throw err;
    }
  }

  async stat(id: string): Promise<BlobStat | null> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.opts.bucket, Key: this.keyOf(id) }));
      return { size: r.ContentLength ?? 0 };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async delete(id: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.opts.bucket, Key: this.keyOf(id) }));
  }

  /** Incomplete resumable uploads: multipart uploads at the blob's key plus a staging object each. */
  partials(): PartialStore {
    return new S3Partials(this.client, { bucket: this.opts.bucket, prefix: this.opts.prefix, partSize: this.opts.partSize, sse: this.sseParams(), keyOf: (id) => this.keyOf(id) });
  }

  /** The audit heads beside the blobs (same client, bucket, prefix and encryption settings). */
  auditHeads(): S3AuditHeads {
    return new S3AuditHeads(this.client, { bucket: this.opts.bucket, prefix: this.opts.prefix, sse: this.sseParams() });
  }

  async checkWritable(): Promise<void> {
    const Key = `${this.opts.prefix}.probe/${randomBytes(8).toString('hex')}`;
    await this.client.send(new PutObjectCommand({ Bucket: this.opts.bucket, Key, Body: Buffer.alloc(0), ...this.sseParams() }));
    await this.client.send(new DeleteObjectCommand({ Bucket: this.opts.bucket, Key }));
  }

  /**
   * Start-up check: the bucket exists, these credentials may use it, and it takes a write.
   * Throws StoreUnavailableError with the reason (wrong credentials, missing bucket, host).
   */
  async verifyReachable(endpointLabel: string): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.opts.bucket }));
    } catch (err) {
      const status = statusOf(err);
      if (status === 404) throw new StoreUnavailableError(`S3_BUCKET: bucket "${this.opts.bucket}" does not exist at ${endpointLabel}`);
      if (status === 403 || status === 401) {
        throw new StoreUnavailableError(`S3: access to bucket "${this.opts.bucket}" denied at ${endpointLabel} (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the instance role)`);
      }
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).name;
      throw new StoreUnavailableError(`S3_ENDPOINT: cannot reach ${endpointLabel} (${status ? `HTTP ${status}` : code})`);
    }
    try {
      await this.checkWritable();
    } catch (err) {
      throw new StoreUnavailableError(`S3: bucket "${this.opts.bucket}" at ${endpointLabel} refused a test write (${(err as Error).name})`);
    }
  }

  /**
   * Every object under the prefix (committed blobs and strays) and every incomplete
   * multipart upload (kind 'temp'), with its age, for the start-up sweep and gc.
   */
  async *entries(): AsyncGenerator<StoreEntry> {
    const { bucket, prefix } = this.opts;
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of page.Contents ?? []) {
        const key = o.Key!;
        const rel = key.slice(prefix.length);
        // Not blobs: readiness probes, the audit heads (which gc must never remove) and the
        // staging objects of resumable uploads (the uploads table's, swept at their expiry).
        if (rel.startsWith('.probe/') || rel.startsWith(AUDIT_HEAD_DIR) || rel.startsWith(`${PARTIAL_DIR}/`)) continue;
        const m = KEY_PATTERN.exec(rel);
        const id = m && m[2]!.startsWith(m[1]!) ? m[2]! : null;
        yield { id, kind: id ? 'blob' : 'stray', path: key, size: o.Size ?? 0, mtimeMs: o.LastModified?.getTime() ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const page = await this.client.send(
        new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
      );
      for (const u of page.Uploads ?? []) {
        const m = KEY_PATTERN.exec(u.Key!.slice(prefix.length));
        yield { id: m ? m[2]! : null, kind: 'temp', path: u.Key!, size: 0, mtimeMs: u.Initiated?.getTime() ?? 0, uploadId: u.UploadId };
      }
      if (!page.IsTruncated) break;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  }

  /** Removes one entry found by entries(): deletes an object or aborts a multipart upload. */
  async removeEntry(e: StoreEntry): Promise<void> {
    if (!e.path.startsWith(this.opts.prefix)) throw new Error('refusing to remove an object outside the prefix');
    if (e.kind === 'temp') {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.opts.bucket, Key: e.path, UploadId: e.uploadId }));
    } else {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.opts.bucket, Key: e.path }));
    }
  }

  /**
   * Aborts multipart uploads older than `olderThanMs` (another instance may have one in
   * flight right now: only leftovers past the grace period are aborted). Returns how many.
   */
  async sweepTemp(olderThanMs = 0, now = Date.now(), keep: ReadonlySet<string> = new Set()): Promise<number> {
    let removed = 0;
    for await (const e of this.entries()) {
      // An open resumable upload's multipart upload is not a leftover, however old.
      if (e.kind === 'temp' && !(e.id && keep.has(e.id)) && now - e.mtimeMs >= olderThanMs) {
        await this.removeEntry(e);
        removed++;
      }
    }
    return removed;
  }
}

/**
 * The audit heads in a bucket shared by N instances, without conditional writes (Swift's s3api
 * answers 501 to If-None-Match): every writer (a server process, an `sfs` run) picks a random
 * id and is the only writer of `<prefix>audit-head/<id>.json`, so no two writers ever race on
 * one key and a plain PUT is enough; it only moves its own object forward (newest wins
 * locally). A verifier lists them all and checks each against the chain; the highest is the
 * end the chain must reach. A writer whose object is an hour old and behind the head just
 * written is pruned by the next writer (at most once an hour per writer), so restarts and CLI
 * runs do not pile objects up. The rare prune that races a writer waking up loses that
 * writer's newest head until its next write: a weaker check for a moment, never a false alarm
 * (docs/security.md).
 */
export class S3AuditHeads implements AuditHeadStore {
  /** This writer's id: random per process, so two instances never share a key. */
  readonly writer = randomBytes(8).toString('hex');
  private written = 0;
  private prunedAt = -Infinity;

  constructor(
    private readonly client: S3Client,
    private readonly opts: { bucket: string; prefix: string; sse: { ServerSideEncryption?: ServerSideEncryption; SSEKMSKeyId?: string } },
    private readonly now: () => number = Date.now,
  ) {}

  private get dir(): string {
    return `${this.opts.prefix}${AUDIT_HEAD_DIR}`;
  }

  /** Every head object: its key, age and the head it holds (null when it holds none). */
  private async *objects(): AsyncGenerator<{ key: string; mtimeMs: number; head: AuditHead | null }> {
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: this.dir, ContinuationToken: token }));
      for (const o of page.Contents ?? []) {
        let head: AuditHead | null = null;
        try {
          const r = await this.client.send(new GetObjectCommand({ Bucket: this.opts.bucket, Key: o.Key! }));
          head = parseHead(await r.Body!.transformToString('utf8'));
        } catch (err) {
          // Listed but gone (pruned, or a listing that lags a delete): it holds no head.
          if (!isNotFound(err)) throw err;
          continue;
        }
        yield { key: o.Key!, mtimeMs: o.LastModified?.getTime() ?? 0, head };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async readAll(): Promise<AuditHead[]> {
    const out: AuditHead[] = [];
    for await (const o of this.objects()) if (o.head) out.push(o.head);
    return out;
  }

  async write(head: AuditHead): Promise<void> {
    if (head.seq <= this.written) return;
    const Key = `${this.dir}${this.writer}.json`;
    await this.client.send(new PutObjectCommand({ Bucket: this.opts.bucket, Key, Body: headText(head), ContentType: 'application/json', ...this.opts.sse }));
    this.written = head.seq;
    if (this.now() - this.prunedAt >= AUDIT_HEAD_STALE_MS) {
      this.prunedAt = this.now();
      await this.prune(head.seq, Key);
    }
  }

  /** Removes other writers' head objects that are stale and behind `seq` (never the highest). */
  private async prune(seq: number, own: string): Promise<void> {
    const now = this.now();
    for await (const o of this.objects()) {
      if (o.key === own || now - o.mtimeMs < AUDIT_HEAD_STALE_MS) continue;
      if (o.head && o.head.seq >= seq) continue;
      await this.client.send(new DeleteObjectCommand({ Bucket: this.opts.bucket, Key: o.key }));
    }
  }

  async replace(head: AuditHead | null): Promise<void> {
    for await (const o of this.objects()) await this.client.send(new DeleteObjectCommand({ Bucket: this.opts.bucket, Key: o.key }));
    this.written = 0;
    if (head) await this.write(head);
  }

  describe(): string {
    return `s3://${this.opts.bucket}/${this.dir}`;
  }
}

/** What an uploads row records of an S3 incomplete upload (store_state JSON). */
interface S3PartialState {
  /** The multipart upload id (at the blob's own key). */
  u: string;
  /** Uploaded parts, in order. */
  parts: { n: number; etag: string; size: number }[];
  /** Bytes of the staging object that are durable (the ciphertext after the last part). */
  staged: number;
}

interface S3PartialOptions {
  bucket: string;
  prefix: string;
  partSize: number;
  sse: { ServerSideEncryption?: ServerSideEncryption; SSEKMSKeyId?: string };
  keyOf: (id: string) => string;
}

/**
 * S3: the ciphertext goes into a multipart upload at the blob's final key, one part per
 * S3_PART_SIZE (S3 refuses parts under 5 MiB but the last). The ciphertext after the last
 * part (less than a part, whole chunks only) is staged in `<prefix>.tus/<id>.stage` when a
 * request ends, so a resume through any instance finds it; the row records the parts and the
 * staged length, which together are the committed offset (docs/format.md).
 */
export class S3Partials implements PartialStore {
  constructor(
    private readonly client: S3Client,
    private readonly o: S3PartialOptions,
  ) {}

  stageKey(id: string): string {
    if (!/^[0-9a-f]{32}$/.test(id)) throw new Error('invalid upload id');
    return `${this.o.prefix}${PARTIAL_DIR}/${id}.stage`;
  }

  describe(id: string): string {
    return `s3://${this.o.bucket}/${this.o.keyOf(id)} (multipart) + ${this.stageKey(id)}`;
  }

  async open(id: string, state: string | null, cipherBytes: number, header: Buffer): Promise<PartialWriter> {
    const prev = state ? (JSON.parse(state) as S3PartialState) : null;
    const Key = this.o.keyOf(id);
    if (cipherBytes <= header.length) {
      const u = prev?.u ?? (await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.o.bucket, Key, ContentType: 'application/octet-stream', ...this.o.sse }))).UploadId!;
      return new S3PartialWriter(this.client, this.o, id, { u, parts: [], staged: 0 }, [header]);
    }
    if (!prev) throw new PartialMissingError(`incomplete upload ${id} has no multipart upload recorded`);
    const inParts = prev.parts.reduce((n, p) => n + p.size, 0);
    if (inParts + prev.staged !== cipherBytes) throw new PartialMissingError(`incomplete upload ${id}: parts and staging hold ${inParts + prev.staged} bytes, its row says ${cipherBytes}`);
    const staged: Buffer[] = [];
    if (prev.staged > 0) {
      let got: Buffer;
      try {
        const r = await this.client.send(new GetObjectCommand({ Bucket: this.o.bucket, Key: this.stageKey(id), Range: `bytes=0-${prev.staged - 1}` }));
        got = Buffer.from(await r.Body!.transformToByteArray());
      } catch (err) {
        if (isNotFound(err)) throw new PartialMissingError(`incomplete upload ${id}: staging object missing`);
        throw err;
      }
      if (got.length !== prev.staged) throw new PartialMissingError(`incomplete upload ${id}: staging object holds ${got.length} bytes, expected ${prev.staged}`);
      staged.push(got);
    }
    return new S3PartialWriter(this.client, this.o, id, { u: prev.u, parts: [...prev.parts], staged: prev.staged }, staged);
  }

  async has(id: string): Promise<boolean> {
    const r = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.o.bucket, Prefix: this.o.keyOf(id) }));
    if ((r.Uploads ?? []).length > 0) return true;
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.o.bucket, Key: this.stageKey(id) }));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async remove(id: string, state: string | null): Promise<void> {
    const prev = state ? (JSON.parse(state) as S3PartialState) : null;
    if (prev?.u) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.o.bucket, Key: this.o.keyOf(id), UploadId: prev.u })).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
    }
    await this.client.send(new DeleteObjectCommand({ Bucket: this.o.bucket, Key: this.stageKey(id) }));
  }
}

class S3PartialWriter implements PartialWriter {
  private bufBytes: number;

  constructor(
    private readonly client: S3Client,
    private readonly o: S3PartialOptions,
    private readonly id: string,
    private readonly st: S3PartialState,
    /** Ciphertext after the last part: staged bytes, then what this request appended. */
    private buf: Buffer[],
  ) {
    this.bufBytes = buf.reduce((n, b) => n + b.length, 0);
  }

  private inParts(): number {
    return this.st.parts.reduce((n, p) => n + p.size, 0);
  }

  private checkpoint(): Checkpoint {
    return { cipherBytes: this.inParts() + this.st.staged, state: JSON.stringify(this.st) };
  }

  private async uploadPart(): Promise<void> {
    const body = Buffer.concat(this.buf);
    const n = this.st.parts.length + 1;
    const r = await this.client.send(new UploadPartCommand({ Bucket: this.o.bucket, Key: this.o.keyOf(this.id), UploadId: this.st.u, PartNumber: n, Body: body, ContentLength: body.length }));
    this.st.parts.push({ n, etag: r.ETag!, size: body.length });
    this.st.staged = 0;
    this.buf = [];
    this.bufBytes = 0;
  }

  async append(pieces: Buffer[]): Promise<Checkpoint | null> {
    for (const p of pieces) {
      if (p.length === 0) continue;
      this.buf.push(p);
      this.bufBytes += p.length;
    }
    if (this.bufBytes < this.o.partSize) return null;
    await this.uploadPart();
    return this.checkpoint();
  }

  async flush(): Promise<Checkpoint> {
    if (this.bufBytes !== this.st.staged) {
      // A plain PUT replaces the staging object whole; its first `staged` bytes never change
      // meaning, so a crash after the PUT and before the row update is still consistent.
      await this.client.send(new PutObjectCommand({ Bucket: this.o.bucket, Key: this.stageKeyOf(), Body: Buffer.concat(this.buf), ContentType: 'application/octet-stream', ...this.o.sse }));
      this.st.staged = this.bufBytes;
    }
    return this.checkpoint();
  }

  private stageKeyOf(): string {
    return `${this.o.prefix}${PARTIAL_DIR}/${this.id}.stage`;
  }

  async finish(): Promise<void> {
    if (this.bufBytes > 0 || this.st.parts.length === 0) await this.uploadPart();
    await this.client.send(
      new CompleteMultipartUploadCommand({
        Bucket: this.o.bucket,
        Key: this.o.keyOf(this.id),
        UploadId: this.st.u,
        MultipartUpload: { Parts: this.st.parts.map((p) => ({ PartNumber: p.n, ETag: p.etag })) },
      }),
    );
    await this.client.send(new DeleteObjectCommand({ Bucket: this.o.bucket, Key: this.stageKeyOf() })).catch(() => {});
  }

  async close(): Promise<void> {
    this.buf = [];
    this.bufBytes = 0;
  }
}
