-- What lies outside the schema baseline compares, on its throwaway database (appdb/adopt/baseline.py):
-- each object with its definition and privileges, one text a row: schemas, relations (their columns,
-- RLS and grants), routines (their whole definition and grants), types and enum labels, triggers,
-- policies, extensions, publications, default privileges, roles, memberships and role settings.
-- The schemas in {skip} (the compared one, the ledger's) and the system's are left out. A migration
-- that changes any row of it, not only one that adds or drops a name, is refused.
WITH ns AS (
    SELECT oid, nspname FROM pg_catalog.pg_namespace
    WHERE nspname <> ALL ({skip}) AND nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema'
)
SELECT pg_catalog.format('schema %I owner %s acl %s', nspname,
                         (SELECT nspowner::pg_catalog.regrole FROM pg_catalog.pg_namespace WHERE oid = ns.oid),
                         (SELECT nspacl FROM pg_catalog.pg_namespace WHERE oid = ns.oid)) FROM ns
UNION ALL SELECT pg_catalog.format('%s %I.%I (%s) rls %s acl %s', c.relkind, ns.nspname, c.relname,
                                   (SELECT pg_catalog.string_agg(pg_catalog.format('%I %s%s', a.attname,
                                               pg_catalog.format_type(a.atttypid, a.atttypmod),
                                               CASE WHEN a.attnotnull THEN ' not null' ELSE '' END), ', '
                                               ORDER BY a.attnum)
                                    FROM pg_catalog.pg_attribute a
                                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                                   c.relrowsecurity, c.relacl)
    FROM pg_catalog.pg_class c JOIN ns ON ns.oid = c.relnamespace
UNION ALL SELECT pg_catalog.format('routine %I.%I(%s) %s acl %s', ns.nspname, p.proname,
                                   pg_catalog.pg_get_function_identity_arguments(p.oid),
                                   CASE WHEN p.prokind IN ('f', 'p')
                                        THEN pg_catalog.md5(pg_catalog.pg_get_functiondef(p.oid)) END, p.proacl)
    FROM pg_catalog.pg_proc p JOIN ns ON ns.oid = p.pronamespace
UNION ALL SELECT pg_catalog.format('type %I.%I %s', ns.nspname, t.typname,
                                   (SELECT pg_catalog.string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                                    FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid))
    FROM pg_catalog.pg_type t JOIN ns ON ns.oid = t.typnamespace
UNION ALL SELECT pg_catalog.pg_get_triggerdef(g.oid)
    FROM pg_catalog.pg_trigger g JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid JOIN ns ON ns.oid = c.relnamespace
    WHERE NOT g.tgisinternal
UNION ALL SELECT pg_catalog.format('policy %I on %s %s %s to %s using %s check %s', o.polname,
                                   o.polrelid::pg_catalog.regclass, o.polcmd, o.polpermissive, o.polroles,
                                   pg_catalog.pg_get_expr(o.polqual, o.polrelid),
                                   pg_catalog.pg_get_expr(o.polwithcheck, o.polrelid))
    FROM pg_catalog.pg_policy o JOIN pg_catalog.pg_class c ON c.oid = o.polrelid JOIN ns ON ns.oid = c.relnamespace
UNION ALL SELECT pg_catalog.format('extension %I %s', extname, extversion) FROM pg_catalog.pg_extension
UNION ALL SELECT pg_catalog.format('publication %I all %s: %s', p.pubname, p.puballtables,
                                   (SELECT pg_catalog.string_agg(r.prrelid::pg_catalog.regclass::text, ',' ORDER BY 1)
                                    FROM pg_catalog.pg_publication_rel r WHERE r.prpubid = p.oid))
    FROM pg_catalog.pg_publication p
UNION ALL SELECT pg_catalog.format('default privileges %s %s %s %s', d.defaclrole::pg_catalog.regrole,
                                   d.defaclnamespace, d.defaclobjtype, d.defaclacl) FROM pg_catalog.pg_default_acl d
    WHERE d.defaclnamespace = 0 OR d.defaclnamespace IN (SELECT oid FROM ns)  -- the global ones and outside's
UNION ALL SELECT pg_catalog.format('role %I %s %s %s %s %s %s %s limit %s until %s', r.rolname, r.rolsuper,
                                   r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolreplication,
                                   r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil)
    FROM pg_catalog.pg_roles r
UNION ALL SELECT pg_catalog.format('member %s of %s admin %s', m.member::pg_catalog.regrole,
                                   m.roleid::pg_catalog.regrole, m.admin_option) FROM pg_catalog.pg_auth_members m
UNION ALL SELECT pg_catalog.format('settings %s %s %s', s.setdatabase, s.setrole::pg_catalog.regrole, s.setconfig)
    FROM pg_catalog.pg_db_role_setting s
