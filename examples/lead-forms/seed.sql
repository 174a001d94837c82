-- Seed data for the lead forms example: two tenants with their sites' branding, their staff,
-- a form each and a few leads.

INSERT INTO tenants (id, slug, name, brand_color, tagline) VALUES
  ('00000000-0000-4000-8000-0000000000a1', 'acme', 'Acme Solar', '#d97706', 'Solar panels for every roof, installed in a day.'),
  ('00000000-0000-4000-8000-0000000000b2', 'globex', 'Globex Dental', '#0891b2', 'Gentle dentistry for the whole family.');

-- `ferrite dev` draws the avatars (initials on the colour) at /avatars/<name>.svg.
INSERT INTO staff (id, tenant_id, name, email, avatar_url, color) VALUES
  ('00000000-0000-4000-8000-0000000000c1', '00000000-0000-4000-8000-0000000000a1', 'Ann Archer', 'ann@acme.example', '/avatars/ann.svg', '#e11d48'),
  ('00000000-0000-4000-8000-0000000000c2', '00000000-0000-4000-8000-0000000000a1', 'Carla Cruz', 'carla@acme.example', '/avatars/carla.svg', '#7c3aed'),
  ('00000000-0000-4000-8000-0000000000c3', '00000000-0000-4000-8000-0000000000b2', 'Bob Brown', 'bob@globex.example', '/avatars/bob.svg', '#2563eb');

INSERT INTO forms (tenant_id, title) VALUES
  ('00000000-0000-4000-8000-0000000000a1', 'Get a quote'),
  ('00000000-0000-4000-8000-0000000000b2', 'Book a visit');

INSERT INTO leads (tenant_id, name, email, phone, message, status, created_at, updated_at) VALUES
  ('00000000-0000-4000-8000-0000000000a1', 'Dana Diaz', 'dana@example.com', '+1 555 0100', 'How much for a 6 kW system on a flat roof?', 'new', now() - interval '2 hours', now() - interval '2 hours'),
  ('00000000-0000-4000-8000-0000000000a1', 'Eli Evans', 'eli@example.com', NULL, 'Do you install batteries as well?', 'contacted', now() - interval '1 day', now() - interval '3 hours'),
  ('00000000-0000-4000-8000-0000000000b2', 'Fay Fox', 'fay@example.com', '555-0199', 'I would like a check-up for two children.', 'new', now() - interval '5 hours', now() - interval '5 hours');
