//! The examples `ferrite dev` can run (`--example <name>`): each one's schema, seed data and
//! settings (compiled in, so `ferrite dev` works from any directory and a fresh clone needs no
//! JavaScript toolchain), its bundled web app, and how its dev sign-in reads the people one can
//! sign in as.

use crate::dev_web::app::AppFile;
use crate::dev_web::sign_in::SignInQueries;

/// One example (see the module docs).
pub struct Example {
    /// The name `--example` takes, also its folder under `examples/`.
    pub name: &'static str,
    /// What it is, in a few words (for `--help` and errors).
    pub about: &'static str,
    /// The database `ferrite dev` creates for it. Each example has its own, so switching between
    /// them in one dev directory keeps both.
    pub database: &'static str,
    /// A table the schema creates: present means the example is loaded already.
    pub marker_table: &'static str,
    /// `schema.sql` and `seed.sql`.
    pub schema: &'static str,
    pub seed: &'static str,
    /// `ferrite.toml`: its `[auth]` mode and `[tables.*]` sections are used.
    pub config: &'static str,
    /// Where in the dev directory its shape logs live (beside its own slot).
    pub shapes_dir: &'static str,
    /// The replication slot and publication: one per example, because slots are per cluster and
    /// each example's database needs its own.
    pub slot_name: &'static str,
    pub publication: &'static str,
    /// The banner's label for the app's URL ("Editor", "Console").
    pub app_label: &'static str,
    /// The web app's files.
    pub app: fn() -> Vec<AppFile>,
    /// The dev sign-in's queries over the example's `users` table.
    pub sign_in: SignInQueries,
    /// The seeded user the printed token is for.
    pub banner_user: &'static str,
    /// Whether `ferrite dev` also runs the example's agent runner (the agents console's backend).
    pub runs_agents: bool,
    /// Public tenant sites (the lead forms): their list, site tokens for visitors, pages under
    /// `/t/<slug>/`, and PGlite's assets for the app's local database.
    pub sites: Option<SiteQueries>,
}

/// How the dev routes of an example with public tenant sites read its tenants (fixed SQL; the
/// slug is a bound parameter).
#[derive(Debug, Clone, Copy)]
pub struct SiteQueries {
    /// One row, one text column: the tenants as a JSON array of `{id, slug, name, brand_color,
    /// tagline}`.
    pub tenants: &'static str,
    /// For the slug `$1`: no row, or the tenant's id as text.
    pub tenant_by_slug: &'static str,
}

/// Declares the files of a committed `dist/` folder of `web/<app>`.
macro_rules! app_files {
    ($dir:literal) => {{
        macro_rules! file {
            ($path:literal, $type:literal) => {
                AppFile {
                    path: $path,
                    content_type: $type,
                    body: include_bytes!(concat!("../../../web/", $dir, "/dist", $path)),
                }
            };
        }
        vec![
            file!("/index.html", "text/html; charset=utf-8"),
            file!("/app.js", "text/javascript; charset=utf-8"),
            file!("/app.css", "text/css; charset=utf-8"),
            file!("/sw.js", "text/javascript; charset=utf-8"),
            file!("/icon.svg", "image/svg+xml"),
        ]
    }};
}

/// The built editor app (`web/editor/dist`, committed; `web/editor/build.mjs` makes it and the
/// test suite checks it matches its sources).
fn editor_app() -> Vec<AppFile> {
    app_files!("editor")
}

/// The built agents console (`web/agents-console/dist`, committed and checked the same way).
fn agents_console_app() -> Vec<AppFile> {
    app_files!("agents-console")
}

/// The built lead forms app (`web/lead-forms/dist`, committed and checked the same way), with
/// the worker that runs its PGlite database.
fn lead_forms_app() -> Vec<AppFile> {
    let mut files = app_files!("lead-forms");
    files.push(AppFile {
        path: "/worker.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../web/lead-forms/dist/worker.js"),
    });
    files
}

/// Every example, the default first.
pub const EXAMPLES: &[Example] = &[
    Example {
        name: "pipeline-editor",
        about: "the collaborative pipeline editor (teams, live membership, include trees)",
        database: "ferrite_dev",
        marker_table: "pipelines",
        schema: include_str!("../../../examples/pipeline-editor/schema.sql"),
        seed: include_str!("../../../examples/pipeline-editor/seed.sql"),
        config: include_str!("../../../examples/pipeline-editor/ferrite.toml"),
        shapes_dir: "shapes",
        slot_name: "ferrite_slot",
        publication: "ferrite_publication",
        app_label: "Editor",
        app: editor_app,
        sign_in: SignInQueries {
            users: "
    SELECT coalesce(json_agg(u ORDER BY u.name), '[]')::text FROM (
      SELECT u.id, u.name, u.email, u.avatar_url, u.color,
             coalesce(json_agg(json_build_object('id', t.id, 'name', t.name, 'role', m.role) ORDER BY t.name)
                        FILTER (WHERE t.id IS NOT NULL), '[]') AS teams
        FROM users u
        LEFT JOIN team_members m ON m.user_id = u.id
        LEFT JOIN teams t ON t.id = m.team_id
       GROUP BY u.id) u",
            // Owners of a team administer the workspace: their tokens carry `role: "admin"`,
            // which the audit trail's read rule asks for (see the example's ferrite.toml).
            user: "SELECT u.name, json_build_object('role', CASE WHEN EXISTS (
                     SELECT 1 FROM team_members m WHERE m.user_id = u.id AND m.role = 'owner') THEN 'admin' ELSE 'member' END)::text
                     FROM users u WHERE u.id = $1::text::uuid",
            avatar: "SELECT name, color FROM users WHERE avatar_url = $1 LIMIT 1",
        },
        banner_user: "00000000-0000-4000-8000-0000000000a1",
        runs_agents: false,
        sites: None,
    },
    Example {
        name: "agents-console",
        about: "the AI-agent task console (React, an agent runner, per-table conflict policies)",
        database: "ferrite_agents",
        marker_table: "agent_executions",
        schema: include_str!("../../../examples/agents-console/schema.sql"),
        seed: include_str!("../../../examples/agents-console/seed.sql"),
        config: include_str!("../../../examples/agents-console/ferrite.toml"),
        shapes_dir: "shapes-agents-console",
        slot_name: "ferrite_agents_slot",
        publication: "ferrite_agents_publication",
        app_label: "Console",
        app: agents_console_app,
        sign_in: SignInQueries {
            users: "
    SELECT coalesce(json_agg(u ORDER BY u.name), '[]')::text FROM (
      SELECT u.id, u.name, u.email, u.avatar_url, u.color, u.role FROM users u) u",
            user: "SELECT u.name, json_build_object('role', u.role)::text FROM users u WHERE u.id = $1::text::uuid",
            avatar: "SELECT name, color FROM users WHERE avatar_url = $1 LIMIT 1",
        },
        banner_user: "00000000-0000-4000-8000-0000000000a1",
        runs_agents: true,
        sites: None,
    },
    Example {
        name: "lead-forms",
        about: "offline lead forms on tenants' sites, with a staff inbox (PGlite on the device)",
        database: "ferrite_leads",
        marker_table: "leads",
        schema: include_str!("../../../examples/lead-forms/schema.sql"),
        seed: include_str!("../../../examples/lead-forms/seed.sql"),
        config: include_str!("../../../examples/lead-forms/ferrite.toml"),
        shapes_dir: "shapes-lead-forms",
        slot_name: "ferrite_leads_slot",
        publication: "ferrite_leads_publication",
        app_label: "Sites",
        app: lead_forms_app,
        sign_in: SignInQueries {
            users: "
    SELECT coalesce(json_agg(u ORDER BY u.tenant_name, u.name), '[]')::text FROM (
      SELECT s.id, s.name, s.email, s.avatar_url, s.color, t.id AS tenant_id, t.slug AS tenant_slug, t.name AS tenant_name
        FROM staff s JOIN tenants t ON t.id = s.tenant_id) u",
            user: "SELECT s.name, json_build_object('role', 'staff', 'tenant_id', s.tenant_id)::text FROM staff s WHERE s.id = $1::text::uuid",
            avatar: "SELECT name, color FROM staff WHERE avatar_url = $1 LIMIT 1",
        },
        banner_user: "00000000-0000-4000-8000-0000000000c1",
        runs_agents: false,
        sites: Some(SiteQueries {
            tenants: "SELECT coalesce(json_agg(json_build_object('id', id, 'slug', slug, 'name', name, 'brand_color', brand_color, 'tagline', tagline) ORDER BY name), '[]')::text FROM tenants",
            tenant_by_slug: "SELECT id::text FROM tenants WHERE slug = $1",
        }),
    },
];

/// The example called `name`, or an error listing them.
pub fn find(name: &str) -> anyhow::Result<&'static Example> {
    EXAMPLES.iter().find(|e| e.name == name).ok_or_else(|| {
        let known: Vec<String> = EXAMPLES.iter().map(|e| format!("{} ({})", e.name, e.about)).collect();
        anyhow::anyhow!("no example called {name:?}; there are: {}", known.join(", "))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn examples_have_distinct_databases_and_slots() {
        let e = super::EXAMPLES;
        for (i, a) in e.iter().enumerate() {
            for b in &e[i + 1..] {
                assert!(a.database != b.database && a.slot_name != b.slot_name && a.publication != b.publication);
                assert_ne!(a.shapes_dir, b.shapes_dir);
            }
            assert!((a.app)().len() >= 5, "{}", a.name);
        }
        assert!(super::find("agents-console").unwrap().runs_agents);
        let err = super::find("nope").err().unwrap().to_string();
        assert!(
            err.contains("pipeline-editor") && err.contains("agents-console") && err.contains("lead-forms"),
            "{err}"
        );
        assert!(super::find("lead-forms").unwrap().sites.is_some());
    }
}
