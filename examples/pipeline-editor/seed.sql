-- Seed data for the pipeline editor example: two teams, four users (Edsger is in no team),
-- three pipelines with their steps, connections, comments and a saved version.

INSERT INTO teams (id, name) VALUES
  ('00000000-0000-4000-8000-000000000001', 'Platform'),
  ('00000000-0000-4000-8000-000000000002', 'Data');

-- `ferrite dev` draws the avatars (initials on the user's colour) at /avatars/<name>.svg.
INSERT INTO users (id, name, email, avatar_url, color) VALUES
  ('00000000-0000-4000-8000-0000000000a1', 'Ada Lovelace',    'ada@example.com',    '/avatars/ada.svg',    '#e11d48'),
  ('00000000-0000-4000-8000-0000000000a2', 'Grace Hopper',    'grace@example.com',  '/avatars/grace.svg',  '#2563eb'),
  ('00000000-0000-4000-8000-0000000000a3', 'Linus Torvalds',  'linus@example.com',  '/avatars/linus.svg',  '#16a34a'),
  ('00000000-0000-4000-8000-0000000000a4', 'Edsger Dijkstra', 'edsger@example.com', '/avatars/edsger.svg', '#ca8a04');

INSERT INTO team_members (team_id, user_id, role) VALUES
  ('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000a1', 'owner'),
  ('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000a2', 'editor'),
  ('00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-0000000000a3', 'owner'),
  ('00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-0000000000a2', 'viewer');

INSERT INTO pipelines (id, team_id, name, description, created_by) VALUES
  ('00000000-0000-4000-8000-0000000000b1', '00000000-0000-4000-8000-000000000001', 'Build & deploy', 'Builds the service and ships it', '00000000-0000-4000-8000-0000000000a1'),
  ('00000000-0000-4000-8000-0000000000b2', '00000000-0000-4000-8000-000000000002', 'Nightly ETL',    'Loads yesterday''s events',       '00000000-0000-4000-8000-0000000000a3'),
  ('00000000-0000-4000-8000-0000000000b3', '00000000-0000-4000-8000-000000000001', 'Docs site',      'Publishes the documentation',     '00000000-0000-4000-8000-0000000000a2');

INSERT INTO steps (id, pipeline_id, name, type, config, position, x, y) VALUES
  ('00000000-0000-4000-8000-0000000000c1', '00000000-0000-4000-8000-0000000000b1', 'Checkout', 'git',    '{"repo": "service"}',      1,  80, 120),
  ('00000000-0000-4000-8000-0000000000c2', '00000000-0000-4000-8000-0000000000b1', 'Build',    'shell',  '{"run": "cargo build"}',   2, 320, 120),
  ('00000000-0000-4000-8000-0000000000c3', '00000000-0000-4000-8000-0000000000b1', 'Test',     'shell',  '{"run": "cargo test"}',    3, 560, 120),
  ('00000000-0000-4000-8000-0000000000c4', '00000000-0000-4000-8000-0000000000b1', 'Deploy',   'deploy', '{"target": "production"}', 4, 800, 120),
  ('00000000-0000-4000-8000-0000000000c5', '00000000-0000-4000-8000-0000000000b2', 'Extract',  'sql',    '{"query": "select 1"}',    1,  80, 200),
  ('00000000-0000-4000-8000-0000000000c6', '00000000-0000-4000-8000-0000000000b2', 'Load',     'copy',   '{"table": "events"}',      2, 320, 200),
  ('00000000-0000-4000-8000-0000000000c7', '00000000-0000-4000-8000-0000000000b3', 'Render',   'shell',  '{"run": "mdbook build"}',  1,  80, 160),
  ('00000000-0000-4000-8000-0000000000c8', '00000000-0000-4000-8000-0000000000b3', 'Publish',  'deploy', '{"target": "pages"}',      2, 320, 160);

INSERT INTO connections (id, pipeline_id, from_step_id, to_step_id) VALUES
  ('00000000-0000-4000-8000-0000000000d1', '00000000-0000-4000-8000-0000000000b1', '00000000-0000-4000-8000-0000000000c1', '00000000-0000-4000-8000-0000000000c2'),
  ('00000000-0000-4000-8000-0000000000d2', '00000000-0000-4000-8000-0000000000b1', '00000000-0000-4000-8000-0000000000c2', '00000000-0000-4000-8000-0000000000c3'),
  ('00000000-0000-4000-8000-0000000000d3', '00000000-0000-4000-8000-0000000000b1', '00000000-0000-4000-8000-0000000000c3', '00000000-0000-4000-8000-0000000000c4'),
  ('00000000-0000-4000-8000-0000000000d4', '00000000-0000-4000-8000-0000000000b2', '00000000-0000-4000-8000-0000000000c5', '00000000-0000-4000-8000-0000000000c6'),
  ('00000000-0000-4000-8000-0000000000d5', '00000000-0000-4000-8000-0000000000b3', '00000000-0000-4000-8000-0000000000c7', '00000000-0000-4000-8000-0000000000c8');

INSERT INTO comments (pipeline_id, step_id, user_id, body) VALUES
  ('00000000-0000-4000-8000-0000000000b1', NULL,                                   '00000000-0000-4000-8000-0000000000a1', 'Let''s add a canary stage before production.'),
  ('00000000-0000-4000-8000-0000000000b1', '00000000-0000-4000-8000-0000000000c3', '00000000-0000-4000-8000-0000000000a2', 'Tests take 9 minutes; can we shard them?');

-- Version 1 of "Build & deploy" is the pipeline before the Deploy step was added; the editor
-- can restore it. A snapshot holds the steps and connections as the editor saves them.
INSERT INTO pipeline_versions (pipeline_id, version_number, snapshot, created_by, created_at) VALUES
  ('00000000-0000-4000-8000-0000000000b1', 1,
   '{"steps": [
      {"id": "00000000-0000-4000-8000-0000000000c1", "name": "Checkout", "type": "git",   "config": {"repo": "service"},    "position": 1, "x": 80,  "y": 120},
      {"id": "00000000-0000-4000-8000-0000000000c2", "name": "Build",    "type": "shell", "config": {"run": "cargo build"}, "position": 2, "x": 320, "y": 120},
      {"id": "00000000-0000-4000-8000-0000000000c3", "name": "Test",     "type": "shell", "config": {"run": "cargo test"},  "position": 3, "x": 560, "y": 120}],
     "connections": [
      {"id": "00000000-0000-4000-8000-0000000000d1", "from_step_id": "00000000-0000-4000-8000-0000000000c1", "to_step_id": "00000000-0000-4000-8000-0000000000c2"},
      {"id": "00000000-0000-4000-8000-0000000000d2", "from_step_id": "00000000-0000-4000-8000-0000000000c2", "to_step_id": "00000000-0000-4000-8000-0000000000c3"}]}',
   '00000000-0000-4000-8000-0000000000a1', now() - interval '2 days');
