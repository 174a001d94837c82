-- Seed data for the agents console example: an admin and two members, their environments,
-- tasks (some already run by the agent, with executions and events), agent memory and two
-- workflows. Times are relative to when the seed is loaded. Some history is older than the
-- console keeps on a device (executions 30 days, events 7 days): it stays in Postgres, the
-- console's shapes leave it out.

-- `ferrite dev` draws the avatars (initials on the user's colour) at /avatars/<name>.svg.
INSERT INTO users (id, name, email, avatar_url, color, role) VALUES
  ('00000000-0000-4000-8000-0000000000a1', 'Ada Lovelace',   'ada@example.com',   '/avatars/ada.svg',   '#e11d48', 'admin'),
  ('00000000-0000-4000-8000-0000000000a2', 'Grace Hopper',   'grace@example.com', '/avatars/grace.svg', '#2563eb', 'member'),
  ('00000000-0000-4000-8000-0000000000a3', 'Linus Torvalds', 'linus@example.com', '/avatars/linus.svg', '#16a34a', 'member');

INSERT INTO environments (id, owner_id, name, config, is_active) VALUES
  ('00000000-0000-4000-8000-0000000000e1', '00000000-0000-4000-8000-0000000000a1', 'Local sandbox', '{"model": "small", "tools": ["shell"]}', true),
  ('00000000-0000-4000-8000-0000000000e2', '00000000-0000-4000-8000-0000000000a1', 'Staging',       '{"model": "large", "tools": ["shell", "http"]}', false),
  ('00000000-0000-4000-8000-0000000000e3', '00000000-0000-4000-8000-0000000000a2', 'Research',      '{"model": "large", "tools": ["search"]}', true);

INSERT INTO tasks (id, owner_id, environment_id, title, description, status, priority, created_at, updated_at) VALUES
  ('00000000-0000-4000-8000-0000000000f1', '00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000e1',
   'Summarise last week''s incidents', 'One paragraph per incident, with the fix.', 'done', 3, now() - interval '2 days', now() - interval '2 days'),
  ('00000000-0000-4000-8000-0000000000f2', '00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000e2',
   'Archive the old build logs', '', 'done', 1, now() - interval '45 days', now() - interval '45 days'),
  ('00000000-0000-4000-8000-0000000000f3', '00000000-0000-4000-8000-0000000000a2', '00000000-0000-4000-8000-0000000000e3',
   'Collect papers on CRDTs', 'Newest first, with a one-line summary each.', 'done', 2, now() - interval '1 day', now() - interval '1 day');

-- Executions: one recent (kept on devices) and one 45 days old (in Postgres only).
INSERT INTO agent_executions (id, owner_id, task_id, agent, status, created_at, started_at, finished_at) VALUES
  ('00000000-0000-4000-8000-000000000d01', '00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000f1',
   'planner', 'succeeded', now() - interval '2 days', now() - interval '2 days', now() - interval '2 days' + interval '4 seconds'),
  ('00000000-0000-4000-8000-000000000d02', '00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000f2',
   'planner', 'succeeded', now() - interval '45 days', now() - interval '45 days', now() - interval '45 days' + interval '3 seconds'),
  ('00000000-0000-4000-8000-000000000d03', '00000000-0000-4000-8000-0000000000a2', '00000000-0000-4000-8000-0000000000f3',
   'planner', 'succeeded', now() - interval '1 day', now() - interval '1 day', now() - interval '1 day' + interval '5 seconds');

-- Events: the recent execution's (kept for 7 days) and the old one's (Postgres only).
INSERT INTO observability_events (owner_id, execution_id, level, message, at)
SELECT e.owner_id, e.id, 'info', m.message, e.started_at + m.after
  FROM agent_executions e,
       (VALUES ('step 1: reading the task', interval '0 seconds'), ('step 2: planning the work', interval '1 second'),
               ('step 3: calling tools', interval '2 seconds'), ('done', interval '3 seconds')) AS m(message, after);

INSERT INTO agent_memory (owner_id, agent, content, importance, last_accessed_at, expires_at) VALUES
  ('00000000-0000-4000-8000-0000000000a1', 'planner', 'Ada prefers summaries under 200 words.', 7, now() - interval '1 hour', NULL),
  ('00000000-0000-4000-8000-0000000000a1', 'planner', 'The staging cluster is being migrated this week.', 4, now() - interval '1 day', now() + interval '5 days'),
  ('00000000-0000-4000-8000-0000000000a1', 'planner', 'Last quarter''s roadmap (superseded).', 1, now() - interval '40 days', now() - interval '1 day'),
  ('00000000-0000-4000-8000-0000000000a2', 'planner', 'Grace reads papers as PDF, not HTML.', 5, now() - interval '3 hours', NULL);

INSERT INTO workflows (id, name, description, definition) VALUES
  ('00000000-0000-4000-8000-000000000101', 'Release checklist', 'What every release needs before it ships.',
   '{"steps": ["Draft the release notes", "Check the changelog links", "Announce the release"]}'),
  ('00000000-0000-4000-8000-000000000102', 'Morning triage', 'Sort the overnight reports.',
   '{"steps": ["Read the overnight alerts", "Group duplicate reports"]}');
