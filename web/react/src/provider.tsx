/**
 * `<FerriteProvider>`: the client the hooks below it use — one the app opened itself
 * (`client`), or one the provider opens from `options` and closes when it unmounts.
 *
 * React 18/19 strict mode mounts, unmounts and mounts again: the first client is closed as soon
 * as its open finishes (or at once), and the second one is the one children see, so a page never
 * keeps two clients syncing the same database.
 */

import { FerriteClient, type FerriteClientOptions } from '@ferrite/client'
import { createContext, useContext, useEffect, useState, type ReactNode } from 'react'

const FerriteContext = createContext<FerriteClient | undefined>(undefined)

/** Props of {@link FerriteProvider}: a client, or the options to open one with. */
export type FerriteProviderProps = { children?: ReactNode } & (
  | { client: FerriteClient; options?: undefined }
  | {
      client?: undefined
      /**
       * Opened on mount and closed on unmount. Only `url` and `database` are watched: to change
       * the shapes or the token source, remount the provider (give it a `key`).
       */
      options: FerriteClientOptions
      /** Shown while the client opens its local database (default: nothing). */
      fallback?: ReactNode
      /** Shown when it cannot be opened (default: the error's message). */
      renderError?: (error: Error) => ReactNode
    }
)

/** Provides a {@link FerriteClient} to the hooks below it (see the module docs). */
export function FerriteProvider(props: FerriteProviderProps) {
  const given = props.client
  const options = props.options
  const [opened, setOpened] = useState<FerriteClient | undefined>(undefined)
  const [error, setError] = useState<Error | undefined>(undefined)
  const identity = options ? `${options.url}\u0000${options.database}` : undefined

  useEffect(() => {
    if (given || !options) return
    let cancelled = false
    let client: FerriteClient | undefined
    setError(undefined)
    FerriteClient.open(options).then(
      (c) => {
        if (cancelled) c.close()
        else {
          client = c
          setOpened(c)
        }
      },
      (e: unknown) => {
        if (!cancelled) setError(e instanceof Error ? e : new Error(String(e)))
      },
    )
    return () => {
      cancelled = true
      client?.close()
      setOpened(undefined)
    }
    // The options object is new on every render: only its identity counts (see the props).
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [given, identity])

  const client = given ?? opened
  if (!client) {
    if (error && !given && props.options) return <>{props.renderError ? props.renderError(error) : `Could not open the local database: ${error.message}`}</>
    return <>{!given && props.options ? (props.fallback ?? null) : null}</>
  }
  return <FerriteContext.Provider value={client}>{props.children}</FerriteContext.Provider>
}

/** The client of the nearest {@link FerriteProvider} (throws outside one). */
export function useFerrite(): FerriteClient {
  const client = useContext(FerriteContext)
  if (!client) throw new Error('useFerrite: no <FerriteProvider> above this component')
  return client
}
