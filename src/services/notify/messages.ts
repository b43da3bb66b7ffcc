/**
 * The text of every notification email, from the stored event alone. Only names, times, a
 * client address and a link to the owner's own page: never a link token, a password or file
 * content. The one exception is the link email to its recipient (`link.sent`), whose URL is
 * unsealed by the worker just before sending and passed in as `linkUrl`.
 */
export interface StoredEvent {
  id: string;
  type: string;
  createdAt: string;
  data: Record<string, unknown>;
  /** Base URL for links to the owner's pages, when one was known at emit time. */
  base?: string | null;
}

export interface RenderedEmail {
  subject: string;
  text: string;
  html: string;
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const str = (v: unknown, fallback = '') => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : fallback);
const when = (v: unknown) => {
  const t = typeof v === 'number' ? v : typeof v === 'string' ? Date.parse(v) : NaN;
  return Number.isFinite(t) ? new Date(t).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : '';
};
// Subjects are one line whatever a file name holds.
const oneLine = (s: string) => s.replace(/[\r\n\t]+/g, ' ').slice(0, 150);

/** Renders the email for one event; `linkUrl` only for link.sent. */
export function renderEmail(ev: StoredEvent, linkUrl?: string): RenderedEmail {
  const d = ev.data;
  const name = str(d.fileName, 'a file');
  const filePage = ev.base && typeof d.fileId === 'string' ? `${ev.base}/files/${d.fileId}` : null;
  const accountPage = ev.base ? `${ev.base}/account` : null;
  let subject: string;
  let lines: string[];
  let page: string | null = filePage;
  switch (ev.type) {
    case 'share.downloaded':
      subject = `Your file "${name}" was downloaded`;
      lines = [
        `"${name}" was downloaded in full through one of your links at ${when(d.at)}, from the address ${str(d.clientAddress, 'unknown')}.`,
        d.maxDownloads === null || d.maxDownloads === undefined ? `Downloads so far: ${str(d.downloads)}.` : `Downloads so far: ${str(d.downloads)} of ${str(d.maxDownloads)}.`,
      ];
      break;
    case 'share.exhausted':
      subject = `A link to "${name}" is used up`;
      lines = [`A link to "${name}" reached its download limit (${str(d.maxDownloads)}) at ${when(d.at)} and no longer works.`];
      break;
    case 'share.expiring':
      subject = `A link to "${name}" expires soon`;
      lines = [`A live link to "${name}" expires at ${when(d.expiresAt)}.`];
      break;
    case 'file.expiring':
      subject = `"${name}" expires soon`;
      lines = [`Your file "${name}", which has live links, expires at ${when(d.expiresAt)}.`];
      break;
    case 'request.upload':
      subject = `Files arrived through your upload request`;
      lines = [`${str(d.count, 'Some')} file(s) arrived through your upload request "${str(d.requestName)}" at ${when(d.at)}.`];
      page = ev.base ? (typeof d.requestId === 'string' ? `${ev.base}/requests/${d.requestId}` : `${ev.base}/requests`) : null;
      break;
    case 'sign_in.new':
      subject = 'New sign-in to your account';
      lines = [`Your account was signed in to at ${when(d.at)} from an address it had not been used from before: ${str(d.clientAddress, 'unknown')} (${str(d.via, 'sign-in')}).`, 'If this was not you, change your password and end your other sessions.'];
      page = accountPage;
      break;
    case 'account.changed':
      subject = 'An administrator changed your account';
      lines = [`An administrator changed your account at ${when(d.at)}: ${str(d.summary, 'settings changed')}.`];
      page = accountPage;
      break;
    case 'link.sent': {
      const owner = str(d.ownerName, 'Someone');
      subject = `${owner} shared "${name}" with you`;
      const message = str(d.message);
      lines = [
        `${owner} sent you a link to download "${name}". It works until ${when(d.expiresAt)}.`,
        ...(message ? ['', `Their message:`, message, ''] : []),
        `Download: ${linkUrl ?? '(link unavailable)'}`,
        ...(d.passwordProtected ? ['The link needs a password. The sender will give it to you another way; it is never sent by email.'] : []),
      ];
      page = null;
      break;
    }
    default:
      subject = `Notification: ${oneLine(ev.type)}`;
      lines = [`Event ${ev.type} at ${when(ev.createdAt)}.`];
  }
  subject = oneLine(subject);
  const footer = page ? [`See ${page}`] : [];
  const text = [...lines, '', ...footer, '', 'You receive this because of your notification settings on the file sharing server.'].join('\n');
  const link = page ? `<p><a href="${esc(page)}">${esc(page)}</a></p>` : '';
  const body = lines
    .map((l) => {
      if (ev.type === 'link.sent' && linkUrl && l === `Download: ${linkUrl}`) return `<p>Download: <a href="${esc(linkUrl)}">${esc(linkUrl)}</a></p>`;
      return l === '' ? '' : `<p>${esc(l).replace(/\n/g, '<br>')}</p>`;
    })
    .join('\n');
  const html = `<!doctype html><html><body>${body}\n${link}<p style="color:#666">You receive this because of your notification settings on the file sharing server.</p></body></html>`;
  return { subject, text, html };
}
