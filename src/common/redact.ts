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
