/**
 * The app's pages, from `location.pathname` (the server answers every one of them with the same
 * page): `/` the list of sites and the staff sign-in, `/t/<slug>/` a tenant's site with its lead
 * form, `/t/<slug>/inbox` the tenant's staff inbox.
 */

export type Route = { page: 'home' } | { page: 'site'; slug: string } | { page: 'inbox'; slug: string } | { page: 'not-found' }

export function routeOf(pathname: string): Route {
  const parts = pathname.split('/').filter((p) => p !== '')
  if (parts.length === 0) return { page: 'home' }
  if (parts[0] !== 't' || parts.length < 2) return { page: 'not-found' }
  let slug: string
  try {
    slug = decodeURIComponent(parts[1]!)
  } catch {
    return { page: 'not-found' }
  }
  if (!/^[A-Za-z0-9_-]{1,100}$/.test(slug)) return { page: 'not-found' }
  if (parts[2] === 'inbox') return { page: 'inbox', slug }
  return { page: 'site', slug }
}

export const sitePath = (slug: string) => `/t/${encodeURIComponent(slug)}/`
export const inboxPath = (slug: string) => `/t/${encodeURIComponent(slug)}/inbox`
