/**
 * The BlobStore contract, run against both backends: the disk directory and a real
 * S3-compatible store (OpenStack Swift's s3api, started by test/services/global-setup.ts).
 */
import { ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand, CreateMultipartUploadCommand, type S3Client } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BlobStore } from '../src/storage/blob-store.js';
import { DiskBlobStore } from '../src/storage/disk.js';
import { MIN_PART_SIZE, S3BlobStore, StoreUnavailableError, createS3Client } from '../src/storage/s3.js';
import { pattern } from './helpers.js';
import { freshBucket, s3Available, s3Service, testS3Client } from './services/services.js';

const S3_OK = s3Available('blob-store (S3)');

async function readAll(r: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** The vault hands stores batches of buffers; cut `data` into batches of mixed piece sizes. */
async function* batches(data: Buffer, failAfter?: number): AsyncGenerator<Buffer[]> {
  let off = 0;
  let i = 0;
  while (off < data.length) {
    const n = Math.min(data.length - off, [65_552, 1, 300_000, 17][i++ % 4]!);
    if (failAfter !== undefined && off + n > failAfter) throw new Error('client went away');
    yield [data.subarray(off, off + n), Buffer.alloc(0)];
    off += n;
  }
  if (failAfter !== undefined) throw new Error('client went away');
}

const newId = () => randomBytes(16).toString('hex');

interface Backend {
  name: string;
  store: BlobStore;
  /** Every stored entry name, including unfinished writes. */
  listing(): Promise<string[]>;
  cleanup(): Promise<void>;
}

const backends: { name: string; enabled: boolean; make(): Promise<Backend> }[] = [
  {
    name: 'disk',
    enabled: true,
    async make() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sfs-blobs-'));
      const store = new DiskBlobStore(dir);
      return {
        name: 'disk',
        store,
        async listing() {
          return fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => f.includes('.'));
        },
        async cleanup() {
          fs.rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: 's3',
    enabled: S3_OK,
    async make() {
      const client = testS3Client();
      const bucket = await freshBucket(client);
      const store = new S3BlobStore(client, { bucket: bucket.name, prefix: 'blobs/', partSize: MIN_PART_SIZE, queueSize: 2 });
      return {
        name: 's3',
        store,
        async listing() {
          const o = await client.send(new ListObjectsV2Command({ Bucket: bucket.name }));
          const u = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket.name }));
          return [...(o.Contents ?? []).map((x) => x.Key!), ...(u.Uploads ?? []).map((x) => `upload:${x.Key}`)];
        },
        cleanup: () => bucket.remove(),
      };
    },
  },
];

const CHUNK = 65_552;
const SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, MIN_PART_SIZE - 1, MIN_PART_SIZE, MIN_PART_SIZE + 1, 2 * MIN_PART_SIZE + 12_345];

for (const b of backends) {
  describe.runIf(b.enabled)(`BlobStore contract: ${b.name}`, () => {
    let be: Backend;
    beforeAll(async () => {
      be = await b.make();
    });
    afterAll(async () => {
      await be?.cleanup();
    });

    it.each(SIZES)('a %i-byte blob reads back byte-exact, whole and in ranges', async (size) => {
      const data = pattern(size, size + 7);
      const id = newId();
      expect(await be.store.put(id, batches(data))).toEqual({ bytes: size });
      expect(await be.store.stat(id)).toEqual({ size });
      if (size > 0) {
        expect((await readAll(be.store.getRange(id, 0, size - 1))).equals(data)).toBe(true);
        const mid = Math.floor(size / 2);
        const end = Math.min(size - 1, mid + CHUNK);
        expect((await readAll(be.store.getRange(id, mid, end))).equals(data.subarray(mid, end + 1))).toBe(true);
        expect((await readAll(be.store.getRange(id, size - 1, size - 1))).equals(data.subarray(size - 1))).toBe(true);
      }
      if (size <= 300_000) {
        const small = await be.store.readSmall(id, size);
        expect(small?.equals(data)).toBe(true);
        // One byte less than the real size: the extra byte shows the blob is longer.
        if (size > 0) expect((await be.store.readSmall(id, size - 1))?.length).toBe(size);
      }
      await be.store.delete(id);
      expect(await be.store.stat(id)).toBeNull();
    });

    it.each([
      ['before anything was written', 0],
      ['after one chunk', CHUNK + 3],
      ['after a whole multipart part went up', MIN_PART_SIZE + 100_000],
      ['after two multipart parts went up', 2 * MIN_PART_SIZE + 100_000],
    ])('a source that fails %s leaves nothing behind', async (_label, failAfter) => {
      const id = newId();
      const before = await be.listing();
      await expect(be.store.put(id, batches(pattern(4 * MIN_PART_SIZE), failAfter))).rejects.toThrow('client went away');
      expect(await be.store.stat(id)).toBeNull();
      expect(await be.listing()).toEqual(before);
    });

    it('missing blobs: stat and readSmall say so, delete is not an error', async () => {
      const id = newId();
      expect(await be.store.stat(id)).toBeNull();
      expect(await be.store.readSmall(id, 100)).toBeNull();
      await expect(be.store.delete(id)).resolves.toBeUndefined();
      await expect(readAll(be.store.getRange(id, 0, 10))).rejects.toThrow();
    });

    it('refuses ids that are not ours, so no key or path can be steered', async () => {
      for (const bad of ['../../etc/passwd', 'ABCDEF0123456789abcdef0123456789', 'x', `${newId()}/..`]) {
        await expect(be.store.put(bad, batches(Buffer.from('x')))).rejects.toThrow('invalid blob id');
        expect(() => be.store.getRange(bad, 0, 1)).toThrow('invalid blob id');
      }
    });

    it('entries() lists committed blobs by id; checkWritable leaves nothing', async () => {
      const id = newId();
      await be.store.put(id, batches(pattern(1000)));
      await be.store.checkWritable();
      const found = [];
      for await (const e of be.store.entries()) found.push(e);
      expect(found.filter((e) => e.kind === 'blob').map((e) => e.id)).toContain(id);
      expect(found.filter((e) => e.kind !== 'blob')).toEqual([]);
      await be.store.delete(id);
    });
  });
}

describe.runIf(S3_OK)('S3 store specifics', () => {
  let client: S3Client;
  let bucket: Awaited<ReturnType<typeof freshBucket>>;
  let store: S3BlobStore;
  beforeAll(async () => {
    client = testS3Client();
    bucket = await freshBucket(client);
    store = new S3BlobStore(client, { bucket: bucket.name, prefix: 'p/', partSize: MIN_PART_SIZE, queueSize: 2 });
  });
  afterAll(async () => {
    await bucket?.remove();
  });

  it('keys blobs as <prefix><2 hex>/<id>.enc', async () => {
    const id = newId();
    await store.put(id, batches(pattern(10)));
    const l = await client.send(new ListObjectsV2Command({ Bucket: bucket.name, Prefix: 'p/' }));
    expect(l.Contents?.map((o) => o.Key)).toEqual([`p/${id.slice(0, 2)}/${id}.enc`]);
    await store.delete(id);
  });

  it('the sweep aborts only unfinished multipart uploads past the grace period, and lists strays', async () => {
    const id = newId();
    const key = store.keyOf(id);
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket.name, Key: key }));
    await client.send(new PutObjectCommand({ Bucket: bucket.name, Key: 'p/notes.txt', Body: 'stray' }));
    const entries = [];
    for await (const e of store.entries()) entries.push(e);
    expect(entries).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ kind: 'temp', id, path: key, uploadId: UploadId }),
        expect.objectContaining({ kind: 'stray', id: null, path: 'p/notes.txt' }),
      ]),
    );
    // Another instance may be writing it right now: a young upload survives the sweep.
    expect(await store.sweepTemp(60 * 60_000)).toBe(0);
    const still = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket.name }));
    expect(still.Uploads?.map((u) => u.UploadId)).toEqual([UploadId]);
    expect(await store.sweepTemp(60 * 60_000, Date.now() + 2 * 60 * 60_000)).toBe(1);
    const after = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket.name }));
    expect(after.Uploads ?? []).toEqual([]);
  });

  it.each([
    ['a missing bucket', () => ({ bucket: 'sfs-no-such-bucket-x', creds: true, endpoint: s3Service()!.endpoint }), /S3_BUCKET: bucket "sfs-no-such-bucket-x" does not exist/],
    ['wrong credentials', () => ({ bucket: bucket.name, creds: false, endpoint: s3Service()!.endpoint }), /access to bucket .* denied/],
    ['an unreachable endpoint', () => ({ bucket: bucket.name, creds: true, endpoint: 'http://127.0.0.1:9' }), /S3_ENDPOINT: cannot reach/],
  ])('the start-up check names the problem: %s', async (_label, make, message) => {
    const { bucket: name, creds, endpoint } = make();
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    if (!creds) {
      process.env.AWS_ACCESS_KEY_ID = 'test:nobody';
      process.env.AWS_SECRET_ACCESS_KEY = 'wrong';
    }
    try {
      const c = createS3Client({ region: 'us-east-1', endpoint, forcePathStyle: true, maxAttempts: 1, connectTimeoutMs: 2000, socketTimeoutMs: 5000 });
      const s = new S3BlobStore(c, { bucket: name, prefix: '', partSize: MIN_PART_SIZE, queueSize: 1 });
      const err = await s.verifyReachable(endpoint).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StoreUnavailableError);
      expect((err as Error).message).toMatch(message);
      expect((err as Error).message).not.toContain('wrong');
    } finally {
      process.env.AWS_ACCESS_KEY_ID = saved.id;
      process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
    }
  });
});
