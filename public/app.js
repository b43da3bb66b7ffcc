// Small enhancements for every page. Everything works without this file; it adds copy
// buttons, confirmation dialogs and focus for secrets shown once. No inline script (CSP).
'use strict';
document.documentElement.classList.add('js');

function copyText(text) {
  // navigator.clipboard needs a secure context (HTTPS or localhost); fall back elsewhere.
  if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.className = 'visually-hidden';
  document.body.appendChild(area);
  area.select();
  const ok = document.execCommand('copy');
  area.remove();
  return ok ? Promise.resolve() : Promise.reject(new Error('copy failed'));
}

function flash(button, text) {
  const original = button.dataset.label || button.textContent;
  button.dataset.label = original;
  button.textContent = text;
  button.classList.toggle('copied', text === 'Copied');
  setTimeout(() => {
    button.textContent = original;
    button.classList.remove('copied');
  }, 2000);
}

document.addEventListener('click', (event) => {
  const button = event.target.closest('[data-copy], [data-copy-from]');
  if (!button) return;
  let text = button.dataset.copy;
  if (text === undefined) {
    const source = document.getElementById(button.dataset.copyFrom);
    if (!source) return;
    text = 'value' in source && source.tagName !== 'PRE' ? source.value : source.textContent;
    if (source.select) source.select();
  }
  copyText(text.trim()).then(
    () => flash(button, 'Copied'),
    () => flash(button, 'Press Ctrl+C'),
  );
});

// Destructive forms ask first. Without JavaScript the server shows a confirmation page instead.
document.addEventListener('submit', (event) => {
  const form = event.target;
  const question = form.dataset && form.dataset.confirm;
  if (!question) return;
  if (!window.confirm(question)) {
    event.preventDefault();
    return;
  }
  if (!form.querySelector('input[name="confirm"]')) {
    const yes = document.createElement('input');
    yes.type = 'hidden';
    yes.name = 'confirm';
    yes.value = 'yes';
    form.appendChild(yes);
  }
});

// A secret shown once gets focus and selection, so Ctrl+C right away copies it.
document.addEventListener('DOMContentLoaded', () => {
  const secret = document.querySelector('.new-secret .secret');
  if (secret) {
    secret.focus();
    secret.select();
  }
});
