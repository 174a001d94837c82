/**
 * Entry point: registers the service worker (so the console loads offline), then shows the
 * sign-in or the signed-in user's console, in React's strict mode.
 */

import { StrictMode, useState } from 'react'
import { createRoot } from 'react-dom/client'
import { App } from './app.js'
import { currentUser, signIn, type SignedIn } from './session.js'
import { SignInView } from './views/signin.js'
import { registerServiceWorker } from '../../shared/register-sw.js'

function Root() {
  const [user, setUser] = useState<SignedIn | undefined>(currentUser)
  if (!user) {
    return (
      <SignInView
        onSignIn={(u) => {
          if (!location.hash) history.replaceState(null, '', '#tasks')
          setUser(signIn(u))
        }}
      />
    )
  }
  return <App user={user} />
}

void registerServiceWorker()
createRoot(document.getElementById('app')!).render(
  <StrictMode>
    <Root />
  </StrictMode>,
)
