/** The service worker: the app shell, cached for offline use (see web/shared/app-shell-sw.ts). */

import { serveAppShell } from '../../shared/app-shell-sw.js'

/** Set by the build: a hash of the shell files, so each build gets its own cache. */
declare const BUILD_VERSION: string

serveAppShell('pipeline-editor-', BUILD_VERSION)
