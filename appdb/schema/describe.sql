-- The canonical description of one schema (appdb/schema/describe.py): one row per object or
-- property, as (sec, grp, rank, identity, definition), in one set-based statement, so
-- a schema of 200 tables costs one round trip and one snapshot of the catalog.
--
-- Rules that make two databases built the same way describe byte-identically:
-- * no OIDs and nothing from physical order: rows sort by names (COLLATE "C"), and
--   columns by name, not attnum (an adopted table gains columns in another order);
-- * definitions come from pg_catalog's deparsers (pg_get_constraintdef, pg_get_indexdef,
--   pg_get_expr, pg_get_triggerdef, pg_get_functiondef, format_type), which the caller
--   runs with search_path = pg_catalog so every name outside pg_catalog is qualified;
-- * privileges come from aclexplode, merged per grantee (grantors are ignored), and an
--   owner's own privileges are listed only where they differ from the built-in default;
-- * names are looked up in pg_class and friends, never through regclass input, so a
--   login without USAGE on Supabase's auth schema can read this.
-- Objects that belong to an extension are the extension's and are left out.
--
-- With %(ledger)s, the description ends with the ledger's schema `appdb` (appdb/sql/ledger.sql):
-- its owner and privileges, and each object's in it (owner and privileges only, never its
-- columns or rows). Only its owner may hold any privilege there, so a grant made by hand
-- shows as `extra`.
-- The parameters are the schema's name and whether to describe the ledger's privileges.
WITH target AS (
    SELECT n.oid, n.nspowner, n.nspacl, quote_ident(n.nspname) AS qschema
    FROM pg_namespace AS n
    WHERE n.nspname = %(schema)s
),
ledger_ns AS (
    SELECT n.oid, n.nspowner, n.nspacl
    FROM pg_namespace AS n
    WHERE n.nspname = 'appdb' AND %(ledger)s AND %(schema)s <> 'appdb'
),
ledger_rels AS (
    SELECT c.oid, c.relkind, c.relowner, c.relacl, 'appdb.' || quote_ident(c.relname) AS qname,
           CASE c.relkind
               WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
               WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' ELSE 'foreign table'
           END AS kind
    FROM pg_class AS c
    JOIN ledger_ns AS l ON l.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
),
ledger_funcs AS (
    SELECT p.oid, p.proowner, p.proacl,
           'appdb.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS qname,
           CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END AS kind
    FROM pg_proc AS p
    JOIN ledger_ns AS l ON l.oid = p.pronamespace
),
rels AS (
    SELECT c.oid, c.relkind, c.relowner, c.relacl, c.relrowsecurity, c.relforcerowsecurity,
           c.relpersistence, c.relreplident, c.reloptions, c.relispartition, c.relpartbound,
           t.qschema || '.' || quote_ident(c.relname) AS qname,
           CASE c.relkind
               WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
               WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' ELSE 'foreign table'
           END AS kind
    FROM pg_class AS c
    JOIN target AS t ON t.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND NOT EXISTS (SELECT FROM pg_depend AS d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
),
funcs AS (
    SELECT p.oid, p.prokind, p.proowner, p.proacl,
           t.qschema || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS qname,
           CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END AS kind
    FROM pg_proc AS p
    JOIN target AS t ON t.oid = p.pronamespace
    WHERE NOT EXISTS (SELECT FROM pg_depend AS d
                      WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
),
-- Relations whose columns may carry their own ACL: the schema's, then the ledger's.
column_rels (sec, qname, oid) AS (
    SELECT 1, r.qname, r.oid FROM rels AS r
    UNION ALL
    SELECT 5, r.qname, r.oid FROM ledger_rels AS r
),
privilege_order (names) AS (
    VALUES (ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER', 'MAINTAIN',
                  'USAGE', 'CREATE', 'EXECUTE', 'CONNECT', 'TEMPORARY']::text[])
),
-- Everything that carries an ACL: (sec, grp, rank, what, acl, owner, acldefault's type).
acls AS (
    SELECT 0 AS sec, '' AS grp, 1 AS rank, 'schema ' || t.qschema AS what, t.nspacl AS acl,
           t.nspowner AS owner, 'n'::"char" AS objtype
    FROM target AS t
    UNION ALL
    SELECT 1, r.qname, 7, r.kind || ' ' || r.qname, r.relacl, r.relowner,
           (CASE r.relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char"
    FROM rels AS r
    UNION ALL
    SELECT 2, f.qname, 1, f.kind || ' ' || f.qname, f.proacl, f.proowner, 'f'::"char"
    FROM funcs AS f
    UNION ALL -- the ledger's
    SELECT 4, '', 1, 'schema appdb', l.nspacl, l.nspowner, 'n'::"char"
    FROM ledger_ns AS l
    UNION ALL
    SELECT 5, r.qname, 7, r.kind || ' ' || r.qname, r.relacl, r.relowner,
           (CASE r.relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char"
    FROM ledger_rels AS r
    UNION ALL
    SELECT 6, f.qname, 1, f.kind || ' ' || f.qname, f.proacl, f.proowner, 'f'::"char"
    FROM ledger_funcs AS f
),
granted AS (
    SELECT a.sec, a.grp, a.rank, a.what, a.owner, a.objtype, e.grantee,
           string_agg(e.privilege_type || CASE WHEN e.grantable THEN ' WITH GRANT OPTION' ELSE '' END, ', '
                      ORDER BY array_position(o.names, e.privilege_type)) AS privileges
    FROM acls AS a
    CROSS JOIN privilege_order AS o
    CROSS JOIN LATERAL (
        SELECT x.grantee, x.privilege_type, bool_or(x.is_grantable) AS grantable
        FROM aclexplode(coalesce(a.acl, acldefault(a.objtype, a.owner))) AS x
        GROUP BY x.grantee, x.privilege_type
    ) AS e
    GROUP BY a.sec, a.grp, a.rank, a.what, a.owner, a.objtype, e.grantee
),
described (sec, grp, rank, identity, definition) AS (
    -- the schema
    SELECT 0, '', 0, 'schema ' || t.qschema, 'owner ' || quote_ident(pg_get_userbyid(t.nspowner))
    FROM target AS t

    UNION ALL -- privileges on the schema, each relation and each function
    SELECT g.sec, g.grp, g.rank,
           'privilege ' || g.what || ' TO ' || CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
           g.privileges
    FROM granted AS g
    CROSS JOIN privilege_order AS o
    WHERE g.grantee <> g.owner
       OR g.privileges IS DISTINCT FROM (
              SELECT string_agg(x.privilege_type, ', ' ORDER BY array_position(o.names, x.privilege_type))
              FROM aclexplode(acldefault(g.objtype, g.owner)) AS x
              WHERE x.grantee = g.owner)

    UNION ALL -- default privileges for objects created later in the schema
    SELECT CASE WHEN d.defaclnamespace = l.oid THEN 4 ELSE 0 END, '', 2,
           'default privileges '
           || CASE WHEN d.defaclnamespace = l.oid THEN 'IN SCHEMA appdb ' ELSE '' END
           || 'FOR ROLE ' || quote_ident(pg_get_userbyid(d.defaclrole)) || ' ON '
           || CASE d.defaclobjtype WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' WHEN 'f' THEN 'FUNCTIONS'
                                   WHEN 'T' THEN 'TYPES' ELSE 'SCHEMAS' END
           || ' TO ' || CASE WHEN e.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(e.grantee)) END,
           string_agg(e.privilege_type || CASE WHEN e.grantable THEN ' WITH GRANT OPTION' ELSE '' END, ', '
                      ORDER BY array_position(o.names, e.privilege_type))
    FROM pg_default_acl AS d
    LEFT JOIN target AS t ON t.oid = d.defaclnamespace
    LEFT JOIN ledger_ns AS l ON l.oid = d.defaclnamespace
    CROSS JOIN privilege_order AS o
    CROSS JOIN LATERAL (
        SELECT x.grantee, x.privilege_type, bool_or(x.is_grantable) AS grantable
        FROM aclexplode(d.defaclacl) AS x
        GROUP BY x.grantee, x.privilege_type
    ) AS e
    WHERE t.oid IS NOT NULL OR l.oid IS NOT NULL
    GROUP BY d.defaclnamespace, l.oid, d.defaclrole, d.defaclobjtype, e.grantee

    UNION ALL -- relations: owner and table-level settings; a view's query, a sequence's parameters
    SELECT 1, r.qname, 0, r.kind || ' ' || r.qname,
           'owner ' || quote_ident(pg_get_userbyid(r.relowner))
           || CASE WHEN r.relpersistence = 'u' THEN ', UNLOGGED' ELSE '' END
           || CASE WHEN r.relkind = 'p' THEN ', PARTITION BY ' || pg_get_partkeydef(r.oid) ELSE '' END
           || CASE WHEN r.relispartition
                   THEN ', PARTITION OF ' || (SELECT quote_ident(pn.nspname) || '.' || quote_ident(pc.relname)
                                              FROM pg_inherits AS i
                                              JOIN pg_class AS pc ON pc.oid = i.inhparent
                                              JOIN pg_namespace AS pn ON pn.oid = pc.relnamespace
                                              WHERE i.inhrelid = r.oid)
                        || ' ' || pg_get_expr(r.relpartbound, r.oid)
                   ELSE '' END
           || CASE WHEN r.relkind NOT IN ('r', 'p') THEN ''
                   WHEN r.relreplident = 'n' THEN ', REPLICA IDENTITY NOTHING' WHEN r.relreplident = 'f' THEN ', REPLICA IDENTITY FULL'
                   WHEN r.relreplident = 'i' THEN ', REPLICA IDENTITY USING INDEX' ELSE '' END
           || coalesce(', WITH (' || (SELECT string_agg(opt, ', ' ORDER BY opt COLLATE "C")
                                      FROM unnest(r.reloptions) AS opt) || ')', '')
           || CASE WHEN r.relkind IN ('v', 'm') THEN E'\n' || rtrim(pg_get_viewdef(r.oid, true), E' \n;') ELSE '' END
           || CASE WHEN r.relkind = 'S' THEN
                  (SELECT ', ' || format_type(s.seqtypid, NULL) || ' START ' || s.seqstart || ' INCREMENT ' || s.seqincrement
                          || ' MINVALUE ' || s.seqmin || ' MAXVALUE ' || s.seqmax || ' CACHE ' || s.seqcache
                          || CASE WHEN s.seqcycle THEN ' CYCLE' ELSE ' NO CYCLE' END
                   FROM pg_sequence AS s WHERE s.seqrelid = r.oid)
                  || coalesce((SELECT ', OWNED BY ' || quote_ident(dn.nspname) || '.' || quote_ident(dc.relname)
                                      || '.' || quote_ident(da.attname)
                                      || CASE WHEN d.deptype = 'i' THEN ' (identity)' ELSE '' END
                               FROM pg_depend AS d
                               JOIN pg_class AS dc ON dc.oid = d.refobjid
                               JOIN pg_namespace AS dn ON dn.oid = dc.relnamespace
                               JOIN pg_attribute AS da ON da.attrelid = d.refobjid AND da.attnum = d.refobjsubid
                               WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
                                 AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                               LIMIT 1), '')
              ELSE '' END
    FROM rels AS r

    UNION ALL -- row level security
    SELECT 1, r.qname, 1, 'rls ' || r.qname,
           CASE WHEN r.relrowsecurity THEN 'enabled' ELSE 'disabled' END
           || CASE WHEN r.relforcerowsecurity THEN ', forced' ELSE '' END
    FROM rels AS r
    WHERE r.relkind IN ('r', 'p')

    UNION ALL -- columns: type, collation, identity or generation, nullability, default
    SELECT 1, r.qname, 2, 'column ' || r.qname || '.' || quote_ident(a.attname),
           format_type(a.atttypid, a.atttypmod)
           || CASE WHEN a.attcollation <> 0 AND a.attcollation <> ty.typcollation
                   THEN ' COLLATE ' || (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                                        FROM pg_collation AS co JOIN pg_namespace AS cn ON cn.oid = co.collnamespace
                                        WHERE co.oid = a.attcollation)
                   ELSE '' END
           || CASE a.attidentity WHEN 'a' THEN ' GENERATED ALWAYS AS IDENTITY'
                                 WHEN 'd' THEN ' GENERATED BY DEFAULT AS IDENTITY' ELSE '' END
           || CASE a.attgenerated WHEN 's' THEN ' GENERATED ALWAYS AS (' || pg_get_expr(ad.adbin, ad.adrelid) || ') STORED'
                                  WHEN 'v' THEN ' GENERATED ALWAYS AS (' || pg_get_expr(ad.adbin, ad.adrelid) || ') VIRTUAL'
                                  ELSE '' END
           || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
           || CASE WHEN ad.adbin IS NOT NULL AND a.attgenerated = '' THEN ' DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid)
                   ELSE '' END
    FROM rels AS r
    JOIN pg_attribute AS a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type AS ty ON ty.oid = a.atttypid
    LEFT JOIN pg_attrdef AS ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE r.relkind IN ('r', 'p', 'f')

    UNION ALL -- constraints by definition (NOT VALID and DEFERRABLE included); not-null is the column's
    SELECT 1, r.qname, 3, 'constraint ' || r.qname || '.' || quote_ident(k.conname), pg_get_constraintdef(k.oid)
    FROM rels AS r
    JOIN pg_constraint AS k ON k.conrelid = r.oid
    WHERE k.contype IN ('c', 'f', 'p', 'u', 'x')

    UNION ALL -- indexes that no constraint owns, with their validity
    SELECT 1, r.qname, 4, 'index ' || r.qname || '.' || quote_ident(ic.relname),
           pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END
    FROM rels AS r
    JOIN pg_index AS i ON i.indrelid = r.oid
    JOIN pg_class AS ic ON ic.oid = i.indexrelid
    WHERE NOT EXISTS (SELECT FROM pg_constraint AS k
                      WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x'))

    UNION ALL -- policies: permissive or not, command, roles, USING and WITH CHECK
    SELECT 1, r.qname, 5, 'policy ' || r.qname || '.' || quote_ident(p.polname),
           CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END
           || ' FOR ' || CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                       WHEN 'd' THEN 'DELETE' ELSE 'ALL' END
           || ' TO ' || (SELECT string_agg(g.name, ', ' ORDER BY g.name COLLATE "C")
                         FROM (SELECT CASE WHEN u.role = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(u.role)) END
                               FROM unnest(p.polroles) AS u(role)) AS g(name))
           || coalesce(' USING (' || pg_get_expr(p.polqual, p.polrelid) || ')', '')
           || coalesce(' WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')', '')
    FROM rels AS r
    JOIN pg_policy AS p ON p.polrelid = r.oid

    UNION ALL -- triggers (not the internal ones behind foreign keys), and whether they fire
    SELECT 1, r.qname, 6, 'trigger ' || r.qname || '.' || quote_ident(tg.tgname),
           pg_get_triggerdef(tg.oid)
           || CASE tg.tgenabled WHEN 'D' THEN ' (disabled)' WHEN 'R' THEN ' (enabled on replicas only)'
                                WHEN 'A' THEN ' (enabled always)' ELSE '' END
    FROM rels AS r
    JOIN pg_trigger AS tg ON tg.tgrelid = r.oid
    WHERE NOT tg.tgisinternal

    UNION ALL -- column privileges, of the schema's relations (sec 1) and the ledger's (sec 5)
    SELECT r.sec, r.qname, 8,
           'privilege column ' || r.qname || '.' || quote_ident(a.attname) || ' TO '
           || CASE WHEN e.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(e.grantee)) END,
           string_agg(e.privilege_type || CASE WHEN e.grantable THEN ' WITH GRANT OPTION' ELSE '' END, ', '
                      ORDER BY array_position(o.names, e.privilege_type))
    FROM column_rels AS r
    JOIN pg_attribute AS a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL
    CROSS JOIN privilege_order AS o
    CROSS JOIN LATERAL (
        SELECT x.grantee, x.privilege_type, bool_or(x.is_grantable) AS grantable
        FROM aclexplode(a.attacl) AS x
        GROUP BY x.grantee, x.privilege_type
    ) AS e
    GROUP BY r.sec, r.qname, a.attname, e.grantee

    UNION ALL -- functions and procedures: owner and full definition
    SELECT 2, f.qname, 0, f.kind || ' ' || f.qname,
           'owner ' || quote_ident(pg_get_userbyid(f.proowner))
           || CASE WHEN f.prokind = 'a' THEN '' ELSE E'\n' || rtrim(pg_get_functiondef(f.oid), E' \n') END
    FROM funcs AS f

    UNION ALL -- the ledger's schema, and each object in it: owner only
    SELECT 4, '', 0, 'schema appdb', 'owner ' || quote_ident(pg_get_userbyid(l.nspowner))
    FROM ledger_ns AS l
    UNION ALL
    SELECT 5, r.qname, 0, r.kind || ' ' || r.qname, 'owner ' || quote_ident(pg_get_userbyid(r.relowner))
    FROM ledger_rels AS r
    UNION ALL
    SELECT 6, f.qname, 0, f.kind || ' ' || f.qname, 'owner ' || quote_ident(pg_get_userbyid(f.proowner))
    FROM ledger_funcs AS f

    UNION ALL -- types: enums (labels in order), domains, composites, ranges
    SELECT 3, t.qschema || '.' || quote_ident(ty.typname), 0, 'type ' || t.qschema || '.' || quote_ident(ty.typname),
           'owner ' || quote_ident(pg_get_userbyid(ty.typowner)) || ', '
           || CASE ty.typtype
                  WHEN 'e' THEN 'ENUM (' || coalesce((SELECT string_agg(quote_literal(en.enumlabel), ', ' ORDER BY en.enumsortorder)
                                                      FROM pg_enum AS en WHERE en.enumtypid = ty.oid), '') || ')'
                  WHEN 'd' THEN 'DOMAIN ' || format_type(ty.typbasetype, ty.typtypmod)
                                || CASE WHEN ty.typnotnull THEN ' NOT NULL' ELSE '' END
                                || coalesce(' DEFAULT ' || ty.typdefault, '')
                                || coalesce((SELECT string_agg(' CONSTRAINT ' || quote_ident(dk.conname) || ' '
                                                               || pg_get_constraintdef(dk.oid), '' ORDER BY dk.conname COLLATE "C")
                                             FROM pg_constraint AS dk WHERE dk.contypid = ty.oid), '')
                  WHEN 'r' THEN 'RANGE (SUBTYPE = ' || (SELECT format_type(rg.rngsubtype, NULL) FROM pg_range AS rg
                                                         WHERE rg.rngtypid = ty.oid) || ')'
                  ELSE 'COMPOSITE (' || coalesce((SELECT string_agg(quote_ident(ca.attname) || ' '
                                                                    || format_type(ca.atttypid, ca.atttypmod), ', '
                                                                    ORDER BY ca.attnum)
                                                  FROM pg_attribute AS ca
                                                  WHERE ca.attrelid = ty.typrelid AND ca.attnum > 0
                                                    AND NOT ca.attisdropped), '') || ')'
              END
    FROM pg_type AS ty
    JOIN target AS t ON t.oid = ty.typnamespace
    WHERE (ty.typtype IN ('e', 'd', 'r')
           OR (ty.typtype = 'c' AND EXISTS (SELECT FROM pg_class AS tc WHERE tc.oid = ty.typrelid AND tc.relkind = 'c')))
      AND NOT EXISTS (SELECT FROM pg_depend AS d
                      WHERE d.classid = 'pg_type'::regclass AND d.objid = ty.oid AND d.deptype = 'e')
)
SELECT identity, definition
FROM described
ORDER BY sec, grp COLLATE "C", rank, identity COLLATE "C"
