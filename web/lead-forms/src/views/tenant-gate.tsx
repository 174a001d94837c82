/**
 * What a tenant's page shows before its tenant is known: loading, "no such site", or "not
 * available offline yet" — the same for the site and the inbox — then the page itself.
 */

import { useEffect, type ReactNode } from 'react'
import { useTenant, type Tenant } from '../tenants.js'

/** Renders `page(tenant)` once the tenant of `slug` is known; `what` names the page in messages. */
export function TenantGate({ slug, what, page }: { slug: string; what: 'site' | 'inbox'; page: (tenant: Tenant) => ReactNode }) {
  const lookup = useTenant(slug)
  useEffect(() => {
    if (lookup.state === 'missing' || lookup.state === 'unavailable') document.documentElement.dataset.ready = 'true'
  }, [lookup.state])
  switch (lookup.state) {
    case 'loading':
      return <p className="boot">Loading the {what}…</p>
    case 'missing':
      return (
        <main className="centered">
          <div className="card">
            <h1>No {what} here</h1>
            <p>There is no site called “{slug}”.</p>
            <p>
              <a href="/">See the sites</a>
            </p>
          </div>
        </main>
      )
    case 'unavailable':
      return (
        <main className="centered">
          <div className="card">
            <h1>This {what} is not available offline yet</h1>
            <p>It has not been opened on this device before, and the server cannot be reached. Try again once you are online.</p>
          </div>
        </main>
      )
    case 'found':
      return page(lookup.tenant)
  }
}
