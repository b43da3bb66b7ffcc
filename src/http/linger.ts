/**
 * "Lingering close" for refused uploads. Closing a socket that still has unread request
 * bytes makes the kernel send RST, and the client may then lose the 413 response we just
 * wrote. So after the response we only half-close (FIN), keep discarding what the client
 * still sends for a short while, then close for good. A client that stops on the response
 * (as curl and browsers do) is gone within a round trip; one that keeps sending is cut off.
 */
import type { Socket } from 'node:net';

const LINGER_MS = 2000;

/** Makes Node's close-after-response on this socket a lingering close. */
export function lingerOnClose(socket: Socket | null | undefined): void {
  if (!socket || (socket as Socket & { sfsLinger?: boolean }).sfsLinger) return;
  (socket as Socket & { sfsLinger?: boolean }).sfsLinger = true;
  // Node calls destroySoon() once a `Connection: close` response has been written.
  socket.destroySoon = function lingeringClose(this: Socket) {
    // The HTTP server's sockets allow half-open: end() sends FIN, reading goes on
    // (the parser discards the rest of the body) until the client closes or time is up.
    this.end();
    const timer = setTimeout(() => this.destroy(), LINGER_MS);
    timer.unref();
    this.once('close', () => clearTimeout(timer));
  };
}
