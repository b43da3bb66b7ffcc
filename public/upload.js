// Upload page: drag and drop or pick files; each file goes up in its own XMLHttpRequest
// (a streaming fetch reports no upload progress), with a progress bar, speed, time left,
// a cancel button and, once stored, the SHA-256 the server computed. Without JavaScript
// the same form posts normally and the server redirects back with the results.
// Files of at least data-tus-threshold bytes go up with tus-js-client instead (resumable:
// pause and resume, automatic retry with backoff on network errors, and after a reload the
// same file picked again resumes where it stopped, from the client's stored fingerprint).
'use strict';
(function () {
  const form = document.getElementById('upload-form');
  const input = document.getElementById('file');
  const zone = document.getElementById('dropzone');
  const queue = document.getElementById('queue');
  const section = document.getElementById('queue-section');
  const template = document.getElementById('upload-row');
  if (!form || !input || !zone || !queue || !template || !window.XMLHttpRequest || !window.FormData) return;
  input.required = false;

  const UNITS = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  function humanSize(n) {
    let v = n;
    let i = 0;
    while (v >= 1024 && i < UNITS.length - 1) {
      v /= 1024;
      i++;
    }
    return i === 0 ? n + (n === 1 ? ' byte' : ' bytes') : v.toFixed(v < 10 ? 1 : 0) + ' ' + UNITS[i];
  }
  function humanSeconds(s) {
    if (!isFinite(s)) return '';
    if (s < 60) return Math.max(1, Math.round(s)) + ' s left';
    if (s < 3600) return Math.round(s / 60) + ' min left';
    return (s / 3600).toFixed(1) + ' h left';
  }
  function csrfToken() {
    return new URL(form.action, location.href).searchParams.get('_csrf') || '';
  }

  // Keep the storage summary current as files are stored.
  function addUsage(bytes) {
    const box = document.getElementById('storage');
    if (!box) return;
    const usage = Number(box.dataset.usage || 0) + bytes;
    box.dataset.usage = String(usage);
    const used = box.querySelector('.storage-used');
    if (used) used.textContent = humanSize(usage);
    const meter = box.querySelector('meter');
    if (meter) meter.value = usage;
  }

  function upload(file) {
    const row = template.content.firstElementChild.cloneNode(true);
    const q = (sel) => row.querySelector(sel);
    const bar = q('.upload-progress');
    const percent = q('.upload-percent');
    const speed = q('.upload-speed');
    const eta = q('.upload-eta');
    const result = q('.upload-result');
    const cancel = q('.upload-cancel');
    const pause = q('.upload-pause');
    q('.upload-name').textContent = file.name;
    q('.upload-size').textContent = humanSize(file.size);
    bar.setAttribute('aria-label', 'Upload of ' + file.name);
    cancel.setAttribute('aria-label', 'Cancel the upload of ' + file.name);
    section.hidden = false;
    queue.appendChild(row);

    const samples = [];
    function show(loaded, total) {
      const pct = total ? Math.floor((loaded / total) * 100) : 100;
      bar.value = pct;
      percent.textContent = pct + '%';
      const now = performance.now();
      samples.push([now, loaded]);
      while (samples.length > 2 && now - samples[0][0] > 3000) samples.shift();
      const [t0, b0] = samples[0];
      if (now - t0 > 250) {
        const rate = ((loaded - b0) * 1000) / (now - t0);
        speed.textContent = humanSize(Math.round(rate)) + '/s';
        eta.textContent = loaded < total && rate > 0 ? humanSeconds((total - loaded) / rate) : '';
      }
    }
    function stored(file) {
      addUsage(file.size);
      bar.value = 100;
      percent.textContent = '100%';
      finish('done', '');
      result.append('Stored. SHA-256 ');
      const code = document.createElement('code');
      code.className = 'hash upload-sha';
      code.textContent = file.sha256;
      result.append(code, ' ');
      const copy = document.createElement('button');
      copy.type = 'button';
      copy.className = 'button ghost tiny';
      copy.dataset.copy = file.sha256;
      copy.textContent = 'Copy';
      copy.setAttribute('aria-label', 'Copy the SHA-256 of ' + file.name);
      const link = document.createElement('a');
      link.href = '/files/' + file.id;
      link.textContent = 'Share';
      link.setAttribute('aria-label', 'Share ' + file.name);
      result.append(copy, ' ', link);
    }
    function finish(kind, message) {
      row.classList.add(kind === 'done' ? 'is-done' : 'is-failed');
      cancel.remove();
      pause.remove();
      eta.textContent = '';
      result.textContent = message;
    }
    if (window.tus && window.tus.isSupported && file.size >= tusThreshold) {
      resumable(file, { show, stored, finish, pause, cancel, percent, eta, speed });
      return;
    }
    const xhr = new XMLHttpRequest();
    xhr.upload.addEventListener('progress', (e) => show(e.loaded, e.lengthComputable ? e.total : file.size));
    let sent = false;
    xhr.upload.addEventListener('load', () => {
      sent = true;
      bar.value = 100;
      percent.textContent = '100%';
      eta.textContent = 'encrypting and checking…';
    });
    xhr.addEventListener('load', () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (_) {
        body = null;
      }
      if (xhr.status === 201 && body && body.files && body.files[0]) {
        stored(body.files[0]);
      } else if (xhr.status === 401) {
        finish('failed', 'Your session has ended. Sign in again, then retry.');
      } else {
        finish('failed', 'Not stored: ' + ((body && body.detail) || 'the server answered ' + xhr.status) + '.');
      }
    });
    xhr.addEventListener('error', () => finish('failed', 'Not stored: the connection failed.'));
    // Once every byte is sent the server may already be storing it: say so rather than promise.
    xhr.addEventListener('abort', () =>
      finish('failed', sent ? 'Cancelled after the last byte was sent; check your files to see whether it was stored.' : 'Cancelled. Nothing was stored.'),
    );
    cancel.addEventListener('click', () => xhr.abort());

    const data = new FormData();
    // The "Keep for" choice goes first, so the server sees it before the file part.
    const keep = form.querySelector('[name="expiresInSeconds"]');
    if (keep && keep.value) data.append('expiresInSeconds', keep.value);
    data.append('file', file, file.name);
    xhr.open('POST', form.action);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.setRequestHeader('X-CSRF-Token', csrfToken());
    xhr.send(data);
  }

  const tusEndpoint = form.dataset.tusEndpoint;
  const tusThreshold = tusEndpoint ? Number(form.dataset.tusThreshold || 0) : Infinity;

  // One file over tus: the server seals it chunk by chunk as it arrives and commits whole
  // chunks only, so a pause, a dropped connection or a reload loses at most the last chunk.
  function resumable(file, ui) {
    let paused = false;
    let done = false;
    const fileInfo = {};
    const upload = new window.tus.Upload(file, {
      endpoint: tusEndpoint,
      headers: { 'X-CSRF-Token': csrfToken() },
      metadata: { filename: file.name, filetype: file.type || 'application/octet-stream' },
      // Backoff on network errors and on 423 (another request still holds the upload).
      retryDelays: [0, 1000, 3000, 5000, 10000, 20000],
      // 8 MiB requests: progress survives even a proxy that buffers whole requests.
      chunkSize: 8 * 1024 * 1024,
      removeFingerprintOnSuccess: true,
      onProgress(sent, total) {
        ui.show(sent, total);
      },
      onAfterResponse(_req, res) {
        const id = res.getHeader('Upload-File-Id');
        if (id) {
          fileInfo.id = id;
          fileInfo.sha256 = res.getHeader('Upload-File-Sha256');
        }
      },
      onSuccess() {
        done = true;
        ui.stored({ id: fileInfo.id, sha256: fileInfo.sha256, size: file.size, name: file.name });
      },
      onError(err) {
        done = true;
        const status = err && err.originalResponse ? err.originalResponse.getStatus() : 0;
        ui.finish('failed', status === 401 ? 'Your session has ended. Sign in again, then pick the file again to resume.' : 'Not stored: the upload failed (' + (status || 'connection lost') + '). Pick the file again to resume.');
      },
    });
    ui.pause.hidden = false;
    ui.pause.setAttribute('aria-label', 'Pause the upload of ' + file.name);
    ui.pause.addEventListener('click', () => {
      if (done) return;
      paused = !paused;
      if (paused) {
        upload.abort();
        ui.pause.textContent = 'Resume';
        ui.pause.setAttribute('aria-label', 'Resume the upload of ' + file.name);
        ui.eta.textContent = 'paused';
        ui.speed.textContent = '';
      } else {
        ui.pause.textContent = 'Pause';
        ui.pause.setAttribute('aria-label', 'Pause the upload of ' + file.name);
        ui.eta.textContent = '';
        upload.start();
      }
    });
    ui.cancel.addEventListener('click', () => {
      done = true;
      // Terminates the upload on the server (its stored ciphertext is removed).
      upload.abort(true).catch(() => {});
      ui.finish('failed', 'Cancelled. Nothing was stored.');
    });
    // After a reload the same file (same name, size, type, date) resumes where it stopped.
    upload.findPreviousUploads().then((previous) => {
      if (previous.length) {
        upload.resumeFromPreviousUpload(previous[0]);
        ui.eta.textContent = 'resuming…';
      }
      upload.start();
    });
  }

  function start(files) {
    for (const f of Array.from(files)) upload(f);
  }

  input.addEventListener('change', () => {
    start(input.files);
    input.value = '';
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (input.files && input.files.length) start(input.files);
  });
  ['dragenter', 'dragover'].forEach((type) =>
    zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add('dragging');
    }),
  );
  ['dragleave', 'drop'].forEach((type) => zone.addEventListener(type, () => zone.classList.remove('dragging')));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) start(e.dataTransfer.files);
  });
})();
