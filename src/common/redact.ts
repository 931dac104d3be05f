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
const SECRET_ASSIGNMENT = /\b([A-Za-z0-9_]*(?:SECRET|PASSWORD|PASSWD|TOKEN|KEY)[A-Za-z0-9_]*=)("[^"]*"|'[^']*'|[^\s'"]+)/gi;
const SECRET_FLAG = /(--[a-z0-9-]*(?:secret|password|token|key)[a-z0-9-]*)(=|\s+)("[^"]*"|'[^']*'|[^\s'"]+)/gi;

export function maskCommandSecrets(command: string): string {
  return maskUserInfo(command).replace(SECRET_ASSIGNMENT, '$1****').replace(SECRET_FLAG, '$1$2****');
}
