/**
 * Runs one server (`node <args...>`) on behalf of bench/run.mjs and makes sure it never
 * outlives the benchmark: when the orchestrator's IPC channel closes (even if it was
 * killed with SIGKILL), the server is killed. Relays the server's pid, stdout and stderr.
 */
import { spawn } from 'node:child_process';

const child = spawn(process.execPath, process.argv.slice(2), { stdio: ['ignore', 'inherit', 'inherit'], env: process.env });
child.on('spawn', () => process.send?.({ pid: child.pid }));
child.on('error', (err) => {
  process.stderr.write(`keeper: ${err.message}\n`);
  process.exit(1);
});
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
process.on('disconnect', () => child.kill('SIGKILL'));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => child.kill(sig));
