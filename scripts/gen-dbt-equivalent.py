#!/usr/bin/env python3
"""Writes one logical analytics project twice: as a pipeline instance and (optionally) as the
equivalent dbt project, so that `pipeline validate` and `dbt parse` can be compared on the same work.

The project (defaults match issue 20's "10,000 models"): TABLES source tables (1,000) over 50 csv
sources, TRANSFORMS SQL models (9,000) and METRICS metrics (2,000).

  * Tables: 50 sources of 20 tables each (orders, customers, payments…), registered with a
    description, a schedule, an incremental sync and column docs.
  * Models form a layered DAG, not a chain: one staging model per table (a CTE renaming columns),
    then intermediate models joining two or three earlier models or tables through CTEs with
    aggregates, then facts and dimensions with window functions, QUALIFY, CASE, subqueries in WHERE
    and UNION ALL. Every model has a description; a fifth carry column docs and unique / not_null
    checks (dbt: tests).
  * Metrics are SQL templates over fact models: one to three grains, a third break down by
    dimensions through `{% if dimension %}`, a quarter have a `by_region` variant. In dbt they are
    semantic-layer metrics: one semantic model per fact model that metrics use, one measure and one
    simple metric per metric (plus the time spine dbt's semantic layer requires).

Deterministic (seeded): the same arguments write byte-identical files.

    scripts/gen-dbt-equivalent.py PIPELINE_DIR [--dbt DBT_DIR] [--tables N] [--transforms N] [--metrics N]
"""
import argparse
import os
import random

ENTITIES = [
    "orders", "order_items", "customers", "products", "payments", "invoices", "refunds",
    "shipments", "sessions", "events", "subscriptions", "plans", "accounts", "contacts",
    "tickets", "campaigns", "clicks", "employees", "suppliers", "inventory",
]
DOMAINS = ["shop", "crm", "billing", "ads", "support", "hr", "erp", "web", "app", "finance"]
COLUMNS = {
    "id": "Identifier",
    "customer_id": "Customer the row belongs to",
    "product_id": "Product concerned",
    "amount": "Amount in USD",
    "quantity": "Units",
    "status": "Lifecycle status",
    "region": "Sales region",
    "created_at": "When the row was created",
    "updated_at": "When the row last changed",
}
GRAINS = ["day", "week", "month", "quarter", "year"]


class Project:
    """The logical project: tables, models (with their SQL bodies and inputs) and metrics."""

    def __init__(self, tables, transforms, metrics, seed=20):
        rnd = random.Random(seed)
        self.sources = []  # (source name, [table names])
        per_source = 20
        n_sources = max(1, (tables + per_source - 1) // per_source)
        made = 0
        for s in range(n_sources):
            name = f"{DOMAINS[s % len(DOMAINS)]}{s // len(DOMAINS) + 1}"
            names = []
            for e in range(per_source):
                if made == tables:
                    break
                names.append(f"{name}_{ENTITIES[e % len(ENTITIES)]}")
                made += 1
            self.sources.append((name, names))
        self.tables = [(src, t) for src, ts in self.sources for t in ts]
        self.models = []  # dicts: name, layer, source, body (SQL with {{ref:x}} / {{table:x}}), doc
        self.build_models(rnd, transforms)
        self.metrics = []
        self.build_metrics(rnd, metrics)

    # -- models -----------------------------------------------------------------------------
    def build_models(self, rnd, count):
        staging = min(count, len(self.tables))
        for i in range(staging):
            src, table = self.tables[i]
            self.add_model(rnd, f"stg_{table}", "staging", src, staging_sql(table))
        rest = count - staging
        intermediate = rest // 2
        for k in range(rest):
            i = staging + k
            src = self.sources[k % len(self.sources)][0]
            if k < intermediate:
                name, body = f"int_{src}_{k:05}", intermediate_sql(rnd, self.pick(rnd, i, 3))
                layer = "intermediate"
            else:
                kind = "fct" if k % 3 else "dim"
                name, body = f"{kind}_{src}_{k:05}", mart_sql(rnd, self.pick(rnd, i, 3))
                layer = "marts"
            self.add_model(rnd, name, layer, src, body)

    def add_model(self, rnd, name, layer, source, body):
        documented = rnd.random() < 0.2
        self.models.append({
            "name": name, "layer": layer, "source": source, "body": body,
            "description": f"{layer.capitalize()} model {name}",
            "columns": dict(list(COLUMNS.items())[:4]) if documented else None,
            "checks": documented,
        })

    def pick(self, rnd, i, most):
        """Two or three inputs for model i: earlier models (mostly recent ones) or source tables."""
        refs = []
        for _ in range(rnd.randint(2, most)):
            if rnd.random() < 0.1:
                refs.append(("table", rnd.choice(self.tables)[1]))
            else:
                lo = max(0, i - 2000)
                refs.append(("ref", self.models[rnd.randrange(lo, i)]["name"]))
        return refs

    # -- metrics ----------------------------------------------------------------------------
    def build_metrics(self, rnd, count):
        facts = [m for m in self.models if m["name"].startswith("fct_")] or self.models
        for n in range(count):
            model = facts[rnd.randrange(len(facts))]
            agg = rnd.choice(["sum", "count", "average", "count_distinct"])
            grains = sorted(rnd.sample(GRAINS, rnd.randint(1, 3)), key=GRAINS.index)
            dims = ["region", "status"] if rnd.random() < 0.33 else []
            self.metrics.append({
                "category": f"area_{n % 20:02}", "name": f"metric_{n:05}", "model": model["name"],
                "agg": agg, "grains": grains, "dimensions": dims,
                "variant": rnd.random() < 0.25,
                "filter": rnd.choice(["completed", "shipped", "paid", "active"]),
            })


def staging_sql(table):
    return (
        "with source as (\n"
        f"  select * from {{{{table:{table}}}}}\n"
        "),\n"
        "renamed as (\n"
        "  select\n"
        "    id,\n"
        "    customer_id,\n"
        "    product_id,\n"
        "    cast(amount as decimal(18, 2)) as amount,\n"
        "    coalesce(quantity, 0) as quantity,\n"
        "    lower(trim(status)) as status,\n"
        "    upper(region) as region,\n"
        "    created_at,\n"
        "    updated_at\n"
        "  from source\n"
        "  where id is not null\n"
        ")\n"
        "select * from renamed\n"
    )


def ref(r):
    kind, name = r
    return f"{{{{{kind}:{name}}}}}"


def intermediate_sql(rnd, inputs):
    a, b = inputs[0], inputs[1]
    extra = inputs[2:]
    joins = "".join(
        f"left join {ref(x)} x{j} on x{j}.customer_id = a.customer_id and x{j}.status <> 'cancelled'\n"
        for j, x in enumerate(extra)
    )
    threshold = rnd.choice([100, 250, 500, 1000])
    return (
        "with a as (\n"
        "  select customer_id, product_id, region, sum(amount) as amount, sum(quantity) as quantity,\n"
        "         count(*) as n, min(created_at) as created_at, max(updated_at) as updated_at\n"
        f"  from {ref(a)}\n"
        "  where status not in ('cancelled', 'test')\n"
        "  group by customer_id, product_id, region\n"
        "),\n"
        "b as (\n"
        "  select customer_id, max(status) as status, count(distinct product_id) as products\n"
        f"  from {ref(b)}\n"
        f"  where created_at >= date '2020-01-01' - interval {rnd.randint(1, 90)} day\n"
        "  group by customer_id\n"
        ")\n"
        "select\n"
        "  md5(a.customer_id::varchar || '-' || a.product_id::varchar) as id,\n"
        "  a.customer_id,\n"
        "  a.product_id,\n"
        "  a.amount,\n"
        "  a.quantity,\n"
        f"  case when a.amount > {threshold} then 'completed' when b.products > 1 then 'shipped' else coalesce(b.status, 'active') end as status,\n"
        "  a.region,\n"
        "  a.created_at,\n"
        "  greatest(a.updated_at, a.created_at) as updated_at\n"
        "from a\n"
        "left join b using (customer_id)\n"
        f"{joins}"
        "where a.n > 0\n"
    )


def mart_sql(rnd, inputs):
    a, b = inputs[0], inputs[1]
    shape = rnd.randrange(3)
    if shape == 0:
        return (
            "select\n"
            "  x.id,\n"
            "  x.customer_id,\n"
            "  x.product_id,\n"
            "  sum(x.amount) over (partition by x.customer_id order by x.created_at\n"
            "                      rows between 6 preceding and current row) as amount,\n"
            "  x.quantity,\n"
            "  x.status,\n"
            "  x.region,\n"
            "  x.created_at,\n"
            "  x.updated_at\n"
            f"from {ref(a)} x\n"
            f"join {ref(b)} y on y.customer_id = x.customer_id\n"
            "where x.status in ('completed', 'shipped', 'paid', 'active')\n"
            "qualify row_number() over (partition by x.id order by x.updated_at desc) = 1\n"
        )
    if shape == 1:
        z = inputs[2] if len(inputs) > 2 else a
        return (
            "select id, customer_id, product_id, amount, quantity, status, region, created_at, updated_at\n"
            f"from {ref(a)}\n"
            f"where customer_id in (select customer_id from {ref(z)} where amount > {rnd.randint(1, 500)})\n"
            "union all\n"
            "select id, customer_id, product_id, -amount, quantity, 'refunded' as status, region, created_at, updated_at\n"
            f"from {ref(b)}\n"
            "where status = 'refunded'\n"
        )
    return (
        "with daily as (\n"
        "  select date_trunc('day', created_at) as created_at, region, status, customer_id,\n"
        "         sum(amount) as amount, sum(quantity) as quantity, max(updated_at) as updated_at\n"
        f"  from {ref(a)}\n"
        "  group by all\n"
        ")\n"
        "select\n"
        "  row_number() over (order by d.created_at, d.customer_id) as id,\n"
        "  d.customer_id,\n"
        "  p.product_id,\n"
        "  d.amount,\n"
        "  d.quantity,\n"
        "  d.status,\n"
        "  coalesce(d.region, 'UNKNOWN') as region,\n"
        "  d.created_at,\n"
        "  d.updated_at\n"
        "from daily d\n"
        f"left join (select customer_id, any_value(product_id) as product_id from {ref(b)} group by 1) p\n"
        "  using (customer_id)\n"
    )


def metric_sql(m, model):
    value = {
        "sum": "sum(amount)",
        "count": "count(*)",
        "average": "avg(amount)",
        "count_distinct": "count(distinct customer_id)",
    }[m["agg"]]
    dim = "{% if dimension %}  {{ dimension }},\n{% endif %}" if m["dimensions"] else ""
    group = "1{% if dimension %}, 2{% endif %}" if m["dimensions"] else "1"
    return (
        "select\n"
        "  date_trunc('{{ grain }}', created_at) as period,\n"
        f"{dim}"
        f"  {value} as value\n"
        f"from {model}\n"
        f"where status = '{m['filter']}'\n"
        f"group by {group}\n"
    )


def variant_sql(m, model):
    return f"select region, {'count(*)' if m['agg'] == 'count' else 'sum(amount)'} as value from {model} group by region"


def render(body, table_ref, model_ref):
    """Replaces the {{table:x}} / {{ref:x}} placeholders of a model body."""
    out, rest = [], body
    while "{{" in rest:
        pre, _, tail = rest.partition("{{")
        inner, _, rest = tail.partition("}}")
        kind, _, name = inner.partition(":")
        out.append(pre)
        out.append(table_ref(name) if kind == "table" else model_ref(name))
    out.append(rest)
    return "".join(out)


def indent(text, n):
    pad = " " * n
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def write_pipeline(p, root):
    write(root, "config/instance.yaml", "name: dbt-equivalent benchmark\ntimezone: Europe/Prague\n")
    os.makedirs(os.path.join(root, "files"), exist_ok=True)
    by_source = {}
    for m in p.models:
        by_source.setdefault(m["source"], []).append(m)
    for src, tables in p.sources:
        out = [f"type: csv\ndescription: Exports of {src}\nconnection:\n  path: files\nschedule: every 15m\n"]
        models = by_source.get(src, [])
        if models:
            out.append("transforms:\n")
        for m in models:
            sql = render(m["body"], lambda t: t, lambda r: r)
            out.append(f"  - name: {m['name']}\n    description: {m['description']}\n    sql: |\n{indent(sql, 6)}")
            if m["columns"]:
                out.append("    columns:\n" + "".join(f"      {k}: {v}\n" for k, v in m["columns"].items()))
            if m["checks"]:
                out.append("    checks:\n      - unique: id\n      - not_null: customer_id\n")
        write(root, f"pipelines/{src}.yaml", "".join(out))
        rows = []
        for t in tables:
            rows.append(
                f"  - id: in.c-{src}.{t}\n    source: {src}\n    bucket: in.c-{src}\n    source_table: {t}\n"
                f"    description: Rows of {t}\n    schedule: \"*/30 * * * *\"\n"
                "    sync: { mode: incremental, cursor: updated_at, primary_key: [id] }\n"
                "    columns:\n" + "".join(f"      {k}: {v}\n" for k, v in COLUMNS.items())
            )
        write(root, f"registry/{src}.yaml", "tables:\n" + "".join(rows))
    for m in p.metrics:
        text = [
            f"description: {m['agg']} of {m['model']} rows with status {m['filter']}\n",
            "owner: analytics@example.com\n",
            f"type: {m['agg']}\n",
            f"grain: [{', '.join(m['grains'])}]\n",
            "time_column: created_at\n",
        ]
        if m["dimensions"]:
            text.append(f"dimensions: [{', '.join(m['dimensions'])}]\n")
        text.append("sql: |\n" + indent(metric_sql(m, m["model"]), 2))
        if m["variant"]:
            text.append(f"variants:\n  by_region: {variant_sql(m, m['model'])}\n")
        write(root, f"metrics/{m['category']}/{m['name']}.yaml", "".join(text))


def write_dbt(p, root):
    table_source = {t: src for src, ts in p.sources for t in ts}
    write(root, "dbt_project.yml",
          "name: equivalent\nversion: '1.0'\nconfig-version: 2\nprofile: equivalent\n"
          "model-paths: [models]\nflags:\n  send_anonymous_usage_stats: false\n"
          "models:\n  equivalent:\n    +materialized: table\n")
    write(root, "profiles.yml",
          "equivalent:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: dev.duckdb\n")
    for src, tables in p.sources:
        cols = "".join(f"              - name: {k}\n                description: {v}\n" for k, v in COLUMNS.items())
        rows = "".join(f"          - name: {t}\n            description: Rows of {t}\n            columns:\n{cols}"
                       for t in tables)
        write(root, f"models/staging/{src}/_sources.yml",
              f"version: 2\nsources:\n  - name: {src}\n    description: Exports of {src}\n    tables:\n{rows}")
    by_dir = {}
    for m in p.models:
        folder = f"models/{m['layer']}/{m['source']}"
        body = render(m["body"], lambda t: f"{{{{ source('{table_source[t]}', '{t}') }}}}",
                      lambda r: f"{{{{ ref('{r}') }}}}")
        write(root, f"{folder}/{m['name']}.sql", body)
        by_dir.setdefault(folder, []).append(m)
    for folder, models in by_dir.items():
        out = ["version: 2\nmodels:\n"]
        for m in models:
            out.append(f"  - name: {m['name']}\n    description: {m['description']}\n")
            if m["columns"] or m["checks"]:
                out.append("    columns:\n")
                cols = dict(m["columns"] or {})
                for k in (["id", "customer_id"] if m["checks"] else []):
                    cols.setdefault(k, COLUMNS[k])
                for k, v in cols.items():
                    out.append(f"      - name: {k}\n        description: {v}\n")
                    if m["checks"] and k in ("id", "customer_id"):
                        out.append(f"        data_tests: [{'unique' if k == 'id' else 'not_null'}]\n")
        write(root, f"{folder}/_models.yml", "".join(out))
    # The semantic layer: a time spine, one semantic model per fact model metrics use.
    write(root, "models/metricflow_time_spine.sql",
          "select cast(range as date) as date_day from range(date '2020-01-01', date '2030-01-01', interval 1 day)\n")
    write(root, "models/_time_spine.yml",
          "version: 2\nmodels:\n  - name: metricflow_time_spine\n    time_spine:\n      standard_granularity_column: date_day\n"
          "    columns:\n      - name: date_day\n        granularity: day\n")
    by_model = {}
    for m in p.metrics:
        by_model.setdefault(m["model"], []).append(m)
    agg = {"sum": "sum", "count": "count", "average": "average", "count_distinct": "count_distinct"}
    expr = {"sum": "amount", "count": "1", "average": "amount", "count_distinct": "customer_id"}
    for n, (model, metrics) in enumerate(sorted(by_model.items())):
        sm = [f"version: 2\nsemantic_models:\n  - name: sm_{model}\n    model: ref('{model}')\n"
              "    defaults:\n      agg_time_dimension: created_at\n"
              f"    entities:\n      - name: {model}_row\n        type: primary\n        expr: id\n"
              "    dimensions:\n      - name: created_at\n        type: time\n        type_params:\n          time_granularity: day\n"
              "      - name: region\n        type: categorical\n      - name: status\n        type: categorical\n"
              "    measures:\n"]
        for m in metrics:
            sm.append(f"      - name: {m['name']}_measure\n        agg: {agg[m['agg']]}\n        expr: {expr[m['agg']]}\n")
        sm.append("metrics:\n")
        for m in metrics:
            sm.append(
                f"  - name: {m['name']}\n    label: {m['name']}\n    description: {m['agg']} of {m['model']} rows with status {m['filter']}\n"
                f"    type: simple\n    type_params:\n      measure: {m['name']}_measure\n"
                f"    filter: \"{{{{ Dimension('{model}_row__status') }}}} = '{m['filter']}'\"\n"
            )
        write(root, f"models/semantic/{model}.yml", "".join(sm))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipeline_dir")
    ap.add_argument("--dbt", metavar="DBT_DIR")
    ap.add_argument("--tables", type=int, default=1000)
    ap.add_argument("--transforms", type=int, default=9000)
    ap.add_argument("--metrics", type=int, default=2000)
    a = ap.parse_args()
    p = Project(a.tables, a.transforms, a.metrics)
    write_pipeline(p, a.pipeline_dir)
    if a.dbt:
        write_dbt(p, a.dbt)


if __name__ == "__main__":
    main()
