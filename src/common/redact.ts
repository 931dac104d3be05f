// URLs may carry credentials as user-info (https://user:secret@host). Those are masked wherever a
// URL can be shown (`walvault config`, every log line: PostgreSQL copies stderr into its log) and
// stripped where a URL is written down for later use (restore_command in postgresql.auto.conf).
// The user-info runs to the LAST '@' before the host: a password may itself contain '@'.
const USER_INFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#]*@/gi;

export function maskUserInfo(text: string): string {
  return text.replace(USER_INFO, '$1****@');
}

export function stripUserInfo(text: string): string {
  return text.replace(USER_INFO, '$1');
}

// A command line someone wrote (archive_command) may carry secrets: NAME=value assignments and
// --flag values whose name says secret, password, token or key, besides URL user-info.
// A value is one shell word, which may be pieces run together: abc"def ghi"'x'.
const WORD = String.raw`(?:"(?:[^"\\]|\\.)*"|'[^']*'|[^\s'"]+)+`;
const SECRET_ASSIGNMENT = new RegExp(String.raw`\b([A-Za-z0-9_]*(?:SECRET|PASSWORD|PASSWD|PASSPHRASE|TOKEN|CREDENTIAL|KEY)[A-Za-z0-9_]*=)${WORD}`, 'gi');
const SECRET_FLAG = new RegExp(String.raw`(--[a-z0-9-]*(?:secret|password|passphrase|token|credential|key)[a-z0-9-]*)(=|\s+)${WORD}`, 'gi');

export function maskCommandSecrets(command: string): string {
  return maskUserInfo(command).replace(SECRET_ASSIGNMENT, '$1****').replace(SECRET_FLAG, '$1$2****');
}
