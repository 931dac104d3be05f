// URLs may carry credentials as user-info (https://user:secret@host). Those are masked wherever a
// URL can be shown: `walvault config` and every log line (PostgreSQL copies stderr into its log).
const USER_INFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@]+@/gi;

export function maskUserInfo(text: string): string {
  return text.replace(USER_INFO, '$1****@');
}
