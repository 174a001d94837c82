/**
 * The front page: the tenants' sites (`tenant-link`), and the staff sign-in (`staff-signin`):
 * picking a staff member opens their tenant's inbox.
 */

import { inboxPath, sitePath } from '../routes.js'
import { rememberStaff, type StaffUser } from '../session.js'
import { brandColor, inkOn, useTenants } from '../tenants.js'
import { useReady } from '../test-hooks.js'
import { StaffButtons, StaffPicker, useStaffList } from './staff-signin.js'

export function Landing() {
  const list = useTenants()
  const staff = useStaffList()
  useReady((list.fresh || list.error !== undefined) && (staff.users !== undefined || staff.error !== undefined))
  const pick = (u: StaffUser) => {
    rememberStaff({ id: u.id, name: u.name, tenant_id: u.tenant_id })
    location.assign(inboxPath(u.tenant_slug))
  }
  const tenants = list.tenants ?? []
  return (
    <main className="landing">
      <header className="landing-header">
        <img src="/icon.svg" alt="" width={36} height={36} />
        <div>
          <h1>Lead forms</h1>
          <p className="muted">Each business below has its own site with a contact form that works offline, and an inbox for its staff.</p>
        </div>
      </header>

      <section aria-labelledby="sites-title">
        <h2 id="sites-title">Sites</h2>
        {list.tenants === undefined ? (
          <p className="muted">{list.error ? 'The list of sites cannot be loaded: the server cannot be reached.' : 'Loading the sites…'}</p>
        ) : tenants.length === 0 ? (
          <p className="muted">There are no sites yet.</p>
        ) : (
          <ul className="tenant-cards">
            {tenants.map((t) => {
              const color = brandColor(t)
              return (
                <li key={t.id} className="tenant-card" style={{ borderTopColor: color }}>
                  <span className="site-mark" style={{ background: color, color: inkOn(color) }} aria-hidden="true">
                    {t.name.slice(0, 1)}
                  </span>
                  <div>
                    <a className="strong" href={sitePath(t.slug)} data-testid="tenant-link" data-slug={t.slug}>
                      {t.name}
                    </a>
                    <p className="muted small">{t.tagline}</p>
                  </div>
                </li>
              )
            })}
          </ul>
        )}
      </section>

      <section aria-labelledby="staff-title" data-testid="staff-signin">
        <h2 id="staff-title">Staff sign-in</h2>
        <p className="muted">Work at one of these businesses? Pick who you are to open your inbox.</p>
        <StaffPicker list={staff} empty="There are no staff to sign in as." onPick={pick} render={(users) => <StaffByTenant users={users} onPick={pick} />} />
      </section>
    </main>
  )
}

function StaffByTenant({ users, onPick }: { users: StaffUser[]; onPick: (u: StaffUser) => void }) {
  const groups = new Map<string, { name: string; users: StaffUser[] }>()
  for (const u of users) {
    let g = groups.get(u.tenant_slug)
    if (!g) groups.set(u.tenant_slug, (g = { name: u.tenant_name, users: [] }))
    g.users.push(u)
  }
  return (
    <div className="staff-groups">
      {[...groups.entries()].map(([slug, g]) => (
        <div key={slug} className="staff-group" data-tenant={slug}>
          <h3>{g.name}</h3>
          <StaffButtons users={g.users} onPick={onPick} />
        </div>
      ))}
    </div>
  )
}
