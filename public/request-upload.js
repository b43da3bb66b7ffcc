// Upload request page (no account): drop or pick files; each goes up in its own
// XMLHttpRequest with a progress bar, and once stored it is added to the receipt (name,
// size, SHA-256 and time, as the server computed them), which can be printed or saved.
// Without JavaScript the same form posts normally and the server answers with a receipt page.
'use strict';
(function () {
  const form = document.getElementById('upload-form');
  const input = document.getElementById('file');
  const zone = document.getElementById('dropzone');
  const queue = document.getElementById('queue');
  const section = document.getElementById('queue-section');
  const template = document.getElementById('upload-row');
  const receipt = document.getElementById('receipt');
  const rows = document.getElementById('receipt-rows');
  if (!form || !input || !zone || !queue || !template || !receipt || !rows || !window.XMLHttpRequest || !window.FormData) return;
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
  function csrfToken() {
    return new URL(form.action, location.href).searchParams.get('_csrf') || '';
  }
  function field(name) {
    const el = form.elements.namedItem(name);
    return el && 'value' in el ? el.value.trim() : '';
  }
  function addToReceipt(f, at) {
    const tr = document.createElement('tr');
    const cell = (text, cls) => {
      const td = document.createElement('td');
      if (cls) td.className = cls;
      td.textContent = text;
      tr.appendChild(td);
      return td;
    };
    cell(f.name, 'file-name');
    cell(humanSize(f.size) + ' (' + f.size.toLocaleString('en') + ' bytes)', 'num nowrap');
    const hash = cell('', '');
    const code = document.createElement('code');
    code.className = 'hash';
    code.textContent = f.sha256;
    hash.appendChild(code);
    cell(at, 'nowrap');
    rows.appendChild(tr);
    receipt.hidden = false;
  }

  function upload(file) {
    const row = template.content.firstElementChild.cloneNode(true);
    const q = (sel) => row.querySelector(sel);
    const bar = q('.upload-progress');
    const percent = q('.upload-percent');
    const result = q('.upload-result');
    const cancel = q('.upload-cancel');
    q('.upload-name').textContent = file.name;
    q('.upload-size').textContent = humanSize(file.size);
    bar.setAttribute('aria-label', 'Upload of ' + file.name);
    cancel.setAttribute('aria-label', 'Cancel the upload of ' + file.name);
    section.hidden = false;
    queue.appendChild(row);

    const xhr = new XMLHttpRequest();
    function finish(kind, message) {
      row.classList.add(kind === 'done' ? 'is-done' : 'is-failed');
      cancel.remove();
      result.textContent = message;
    }
    xhr.upload.addEventListener('progress', (e) => {
      const total = e.lengthComputable ? e.total : file.size;
      const pct = total ? Math.floor((e.loaded / total) * 100) : 100;
      bar.value = pct;
      percent.textContent = pct + '%';
    });
    xhr.addEventListener('load', () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (_) {
        body = null;
      }
      if (xhr.status === 201 && body && body.files && body.files[0]) {
        bar.value = 100;
        percent.textContent = '100%';
        finish('done', 'Received. SHA-256 ' + body.files[0].sha256);
        for (const f of body.files) addToReceipt(f, body.receivedAt);
      } else {
        finish('failed', 'Not received: ' + ((body && body.detail) || 'the server answered ' + xhr.status) + '.');
      }
    });
    xhr.addEventListener('error', () => finish('failed', 'Not received: the connection failed.'));
    xhr.addEventListener('abort', () => finish('failed', 'Cancelled.'));
    cancel.addEventListener('click', () => xhr.abort());

    // Name and email first: the server checks them before it stores any byte of the file.
    const data = new FormData();
    data.append('name', field('name'));
    data.append('email', field('email'));
    data.append('file', file, file.name);
    xhr.open('POST', form.action);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.setRequestHeader('X-CSRF-Token', csrfToken());
    xhr.send(data);
  }

  function start(files) {
    // Required name or email: the browser says what is missing, nothing is sent.
    for (const id of ['uploader-name', 'uploader-email']) {
      const el = document.getElementById(id);
      if (el && !el.checkValidity()) {
        el.reportValidity();
        return;
      }
    }
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
  const print = document.getElementById('print-receipt');
  if (print) print.addEventListener('click', () => window.print());
})();
