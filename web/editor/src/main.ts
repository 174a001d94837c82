/**
 * Entry point: registers the service worker (so the app loads offline), then shows the sign-in
 * or the signed-in user's editor.
 */

import { App } from './app.js'
import { currentUser, signIn } from './session.js'
import { signInView } from './views/signin.js'
import { h, replaceChildren } from './dom.js'
import { registerServiceWorker } from '../../shared/register-sw.js'

async function boot(): Promise<void> {
  const root = document.getElementById('app')!
  void registerServiceWorker()
  const user = currentUser()
  if (!user) {
    replaceChildren(
      root,
      signInView((u) => {
        signIn(u)
        location.hash = '#/'
        location.reload()
      }),
    )
    return
  }
  try {
    const app = await App.start(root, user)
    ;(window as unknown as { editor: App }).editor = app
  } catch (e) {
    replaceChildren(root, h('main', { class: 'sign-in' }, h('p', { class: 'error' }, `The editor could not start: ${(e as Error).message}`)))
    throw e
  }
}

void boot()
