/**
 * Entry point: registers the service worker (so every page loads offline once visited), then
 * shows the page `location.pathname` names (routes.ts), in React's strict mode.
 */

import { StrictMode } from 'react'
import { createRoot } from 'react-dom/client'
import { routeOf } from './routes.js'
import { InboxPage } from './views/inbox.js'
import { Landing } from './views/landing.js'
import { SitePage } from './views/site.js'
import { registerServiceWorker } from '../../shared/register-sw.js'

function NotFound() {
  document.documentElement.dataset.ready = 'true'
  return (
    <main className="centered">
      <div className="card">
        <h1>Page not found</h1>
        <p>
          <a href="/">See the sites</a>
        </p>
      </div>
    </main>
  )
}

function Root() {
  const route = routeOf(location.pathname)
  switch (route.page) {
    case 'home':
      return <Landing />
    case 'site':
      return <SitePage slug={route.slug} />
    case 'inbox':
      return <InboxPage slug={route.slug} />
    case 'not-found':
      return <NotFound />
  }
}

void registerServiceWorker()
createRoot(document.getElementById('app')!).render(
  <StrictMode>
    <Root />
  </StrictMode>,
)
