/**
 * Quoting a file name for the "verify your download" commands on the recipient page. The
 * name comes from whoever uploaded the file, so it must reach the recipient's shell as one
 * literal argument: nothing in it may expand, substitute, split or end the command.
 */

/** A name the page shows instead when the real one cannot be pasted safely as one line. */
export const PLACEHOLDER_NAME = 'downloaded-file';

// Name cleaning (services/filenames.ts) already strips these; a row from before that rule,
// or a future change to it, must still never put a line break into a pasted command.
const UNPASTEABLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;

/** POSIX sh: single quotes keep every byte literal; an embedded ' becomes '\'' (close, escaped quote, reopen). */
export function posixQuote(s: string): string {
  return `'${s.replaceAll("'", "'\\''")}'`;
}

// PowerShell treats the typographic quotes U+2018..U+201B exactly like ' (open, close, escape).
const PS_SINGLE_QUOTES = /['\u2018\u2019\u201a\u201b]/g;

/** PowerShell: a single-quoted string (no expansion) with every kind of single quote doubled. */
export function powershellQuote(s: string): string {
  return `'${s.replace(PS_SINGLE_QUOTES, (q) => q + q)}'`;
}

/** The commands the recipient page shows for `name`, and whether a placeholder stands in for it. */
export function verifyCommands(name: string): { posix: string; powershell: string; placeholder: boolean } {
  const placeholder = UNPASTEABLE.test(name);
  const shown = placeholder ? PLACEHOLDER_NAME : name;
  return {
    // `--` so a name starting with "-" is not read as an option.
    posix: `sha256sum -- ${posixQuote(shown)}`,
    // -LiteralPath: [ ] * ? in the name are not wildcards.
    powershell: `Get-FileHash -Algorithm SHA256 -LiteralPath ${powershellQuote(shown)}`,
    placeholder,
  };
}
