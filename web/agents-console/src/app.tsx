/**
 * The signed-in console: opens the user's client (one IndexedDB database per user), and lays out
 * the header (who, connection, sync), the notices, the tabs and the current view. The tab lives
 * in `location.hash`, so a reload stays where the user was.
 */

import { devTokenSource, type FerriteClient, type FerriteClientOptions } from '@ferrite/client'
import { ConnectionStatus, FerriteProvider, OfflineIndicator, SyncButton, useFerrite, useShape } from '@ferrite/react'
import { useEffect, useMemo, useState } from 'react'
import { SHAPES } from './data.js'
import { initials } from './format.js'
import { signOut, type SignedIn } from './session.js'
import { DeviceView } from './views/device.js'
import { EnvironmentsView } from './views/environments.js'
import { ExecutionsView } from './views/executions.js'
import { MemoryView } from './views/memory.js'
import { Notices, NoticesProvider } from './views/notices.js'
import { TasksView } from './views/tasks.js'
import { WorkflowsView } from './views/workflows.js'

declare global {
  interface Window {
    /** The opened client, for the browser tests (and a curious developer's console). */
    agentsConsole?: { client: FerriteClient }
  }
}

const TABS = [
  { id: 'tasks', label: 'Tasks' },
  { id: 'environments', label: 'Environments' },
  { id: 'executions', label: 'Executions' },
  { id: 'memory', label: 'Memory' },
  { id: 'workflows', label: 'Workflows' },
  { id: 'device', label: 'This device' },
] as const

type Tab = (typeof TABS)[number]['id']

function tabFromHash(): Tab {
  const h = location.hash.replace(/^#\/?/, '')
  return TABS.find((t) => t.id === h)?.id ?? 'tasks'
}

/** The current tab, kept in (and following) `location.hash`. */
function useTab(): [Tab, (t: Tab) => void] {
  const [tab, setTab] = useState<Tab>(tabFromHash)
  useEffect(() => {
    const follow = () => setTab(tabFromHash())
    window.addEventListener('hashchange', follow)
    return () => window.removeEventListener('hashchange', follow)
  }, [])
  return [
    tab,
    (t) => {
      if (location.hash !== `#${t}`) location.hash = t
      setTab(t)
    },
  ]
}

/** The console of `user`: their client, then the layout. */
export function App({ user }: { user: SignedIn }) {
  // Only url and database are watched by the provider; the rest is fixed per user.
  const options = useMemo<FerriteClientOptions>(
    () => ({ url: location.origin, database: `agents-console:${user.id}`, shapes: SHAPES, token: devTokenSource(user.id) }),
    [user.id],
  )
  return (
    <FerriteProvider
      key={user.id}
      options={options}
      fallback={<p className="boot">Opening your data on this device…</p>}
      renderError={(e) => (
        <main className="centered">
          <p className="error">The data on this device could not be opened: {e.message}</p>
        </main>
      )}
    >
      <NoticesProvider role={user.role}>
        <Console user={user} />
      </NoticesProvider>
    </FerriteProvider>
  )
}

/** Exposes the client to tests and marks the page ready once the tasks have loaded. */
function useTestHooks(): void {
  const client = useFerrite()
  const { loaded } = useShape('tasks')
  useEffect(() => {
    window.agentsConsole = { client }
    return () => {
      if (window.agentsConsole?.client === client) delete window.agentsConsole
    }
  }, [client])
  useEffect(() => {
    if (!loaded) return
    document.documentElement.dataset.ready = 'true'
    return () => {
      delete document.documentElement.dataset.ready
    }
  }, [loaded])
}

function Console({ user }: { user: SignedIn }) {
  useTestHooks()
  const [tab, setTab] = useTab()
  return (
    <div className="layout">
      <header className="topbar">
        <div className="brand">
          <img src="/icon.svg" alt="" width={28} height={28} />
          <span>Agents console</span>
        </div>
        <div className="topbar-status">
          <ConnectionStatus />
          <SyncButton />
        </div>
        <div className="who">
          <span className="avatar" style={{ background: user.color }} aria-hidden="true">
            {initials(user.name)}
          </span>
          <span className="who-name" data-testid="user-name">
            {user.name}
          </span>
          <span className={`badge role-${user.role}`} data-testid="user-role">
            {user.role === 'admin' ? 'Admin' : 'Member'}
          </span>
          <button
            type="button"
            className="secondary"
            data-testid="sign-out"
            onClick={() => {
              signOut()
              history.replaceState(null, '', location.pathname)
              location.reload()
            }}
          >
            Sign out
          </button>
        </div>
      </header>
      <OfflineIndicator />
      <div className="body">
        <nav className="tabs" aria-label="Sections">
          {TABS.map((t) => (
            <button key={t.id} type="button" data-tab={t.id} aria-current={tab === t.id ? 'page' : undefined} onClick={() => setTab(t.id)}>
              {t.label}
            </button>
          ))}
        </nav>
        <main className="content">
          <Notices />
          {tab === 'tasks' && <TasksView user={user} />}
          {tab === 'environments' && <EnvironmentsView user={user} />}
          {tab === 'executions' && <ExecutionsView />}
          {tab === 'memory' && <MemoryView />}
          {tab === 'workflows' && <WorkflowsView user={user} />}
          {tab === 'device' && <DeviceView />}
        </main>
      </div>
    </div>
  )
}
