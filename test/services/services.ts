/**
 * Real services for the suites that need them (an S3-compatible store: OpenStack Swift with
 * its s3api middleware). vitest's global setup (test/services/global-setup.ts) starts them
 * from this project's own scripts when their Debian packages are installed and exports where
 * they listen; suites ask here whether they can run. Without the service a suite skips and
 * the run prints one line; REQUIRE_SERVICES=1 (CI) makes a missing service a failure.
 */
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  ListObjectsV2Command,
  ListMultipartUploadsCommand,
  AbortMultipartUploadCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import type * as PgModule from 'pg';
import { createS3Client } from '../../src/storage/s3.js';

export interface S3Service {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
}

/** The S3 endpoint the global setup started (or was given), if any. */
export function s3Service(): S3Service | undefined {
  const endpoint = process.env.SFS_TEST_S3_ENDPOINT;
  if (!endpoint) return undefined;
  return {
    endpoint,
    region: process.env.SFS_TEST_S3_REGION ?? 'us-east-1',
    accessKeyId: process.env.SFS_TEST_S3_ACCESS_KEY_ID ?? '',
    secretAccessKey: process.env.SFS_TEST_S3_SECRET_ACCESS_KEY ?? '',
  };
}

/** True when S3 suites can run; throws under REQUIRE_SERVICES=1 when they cannot. */
export function s3Available(suite: string): boolean {
  if (s3Service()) return true;
  if (process.env.REQUIRE_SERVICES === '1') {
    throw new Error(`${suite}: REQUIRE_SERVICES=1 but no S3 service is running (${process.env.SFS_TEST_S3_MISSING ?? 'see test/services'})`);
  }
  return false;
}

/** Environment for a server or harness on the test S3 service with a given bucket. */
export function s3Env(bucket: string, extra: Record<string, string> = {}): Record<string, string> {
  const s = s3Service()!;
  return {
    STORAGE: 's3',
    S3_BUCKET: bucket,
    S3_ENDPOINT: s.endpoint,
    S3_REGION: s.region,
    S3_FORCE_PATH_STYLE: 'true',
    S3_PART_SIZE: String(5 * 1024 * 1024),
    ...extra,
  };
}

/** An SDK client on the test service (credentials from the environment the setup exported). */
export function testS3Client(): S3Client {
  const s = s3Service()!;
  return createS3Client({ region: s.region, endpoint: s.endpoint, forcePathStyle: true, maxAttempts: 2, connectTimeoutMs: 3000, socketTimeoutMs: 30000 });
}

/** Creates a fresh, uniquely named bucket; remove() empties and deletes it. */
export async function freshBucket(client: S3Client): Promise<{ name: string; remove(): Promise<void> }> {
  const name = `sfs-test-${randomBytes(6).toString('hex')}`;
  await client.send(new CreateBucketCommand({ Bucket: name }));
  return {
    name,
    async remove() {
      for (;;) {
        const l = await client.send(new ListObjectsV2Command({ Bucket: name }));
        for (const o of l.Contents ?? []) await client.send(new DeleteObjectCommand({ Bucket: name, Key: o.Key }));
        if (!l.IsTruncated) break;
      }
      const u = await client.send(new ListMultipartUploadsCommand({ Bucket: name }));
      for (const x of u.Uploads ?? []) await client.send(new AbortMultipartUploadCommand({ Bucket: name, Key: x.Key, UploadId: x.UploadId }));
      await client.send(new DeleteBucketCommand({ Bucket: name }));
    },
  };
}

/** A new, empty database on the test PostgreSQL server (SFS_TEST_DATABASE_URL); `drop()` removes it. */
export async function freshDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const pg = createRequire(import.meta.url)('pg') as typeof PgModule;
  const base = process.env.SFS_TEST_DATABASE_URL;
  if (!base) throw new Error('no PostgreSQL test server (SFS_TEST_DATABASE_URL): see test/services/global-setup.ts');
  const name = `sfs_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const u = new URL(base);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}
