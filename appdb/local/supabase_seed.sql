-- A few Supabase Auth users for trying RLS by hand on the local database
-- (`appdb local reset --seed`). Fixed ids, so examples in the README keep working.
INSERT INTO auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)
VALUES
    ('00000000-0000-4000-8000-000000000001', 'authenticated', 'authenticated', 'ada@example.com', '{}', '{}'),
    ('00000000-0000-4000-8000-000000000002', 'authenticated', 'authenticated', 'grace@example.com', '{}', '{}'),
    ('00000000-0000-4000-8000-000000000003', 'authenticated', 'authenticated', 'linus@example.com', '{}', '{}')
ON CONFLICT (id) DO NOTHING;
