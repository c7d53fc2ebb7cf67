#!/usr/bin/env python3
"""Generate the demo instance's data: a small online shop (Acme Outdoor) over 22 months.

Deterministic (fixed seed, no dependency beyond the standard library): running it again rewrites
byte-identical files. The output is committed under examples/data/; run this only to change the data.

    python3 scripts/gen-demo-data.py            # writes examples/data/{shop,crm}/*.csv
"""
import csv
import datetime as dt
import math
import os
import random

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "data")
START = dt.date(2025, 1, 1)
END = dt.date(2026, 10, 31)
DAYS = (END - START).days + 1
rng = random.Random(20261123)

COUNTRIES = [("US", 0.34, ["New York", "Austin", "Denver", "Seattle", "Chicago"]),
             ("DE", 0.16, ["Berlin", "Munich", "Hamburg"]),
             ("GB", 0.14, ["London", "Manchester", "Leeds"]),
             ("CZ", 0.10, ["Prague", "Brno", "Ostrava"]),
             ("FR", 0.10, ["Paris", "Lyon", "Grenoble"]),
             ("CA", 0.08, ["Toronto", "Vancouver", "Calgary"]),
             ("AU", 0.08, ["Sydney", "Melbourne"])]
CHANNELS = [("google_ads", 0.30), ("meta_ads", 0.22), ("tiktok_ads", 0.10), ("email", 0.13),
            ("affiliate", 0.10), ("organic", 0.15)]
PAID = ["google_ads", "meta_ads", "tiktok_ads", "email", "affiliate"]
FIRST = ["Ada", "Ben", "Clara", "David", "Eva", "Filip", "Grace", "Hugo", "Ines", "Jan", "Karla", "Liam",
         "Mia", "Noah", "Olga", "Petr", "Quinn", "Rosa", "Sam", "Tereza", "Uma", "Viktor", "Wen", "Yara",
         "Zoe", "Lukas", "Emma", "Oliver", "Sofia", "Jakub"]
LAST = ["Novak", "Carter", "Weiss", "Martin", "Schmidt", "Dvorak", "Brown", "Muller", "Dubois", "Smith",
        "Svoboda", "Jones", "Fischer", "Bernard", "Taylor", "Kral", "Wilson", "Wagner", "Moreau", "Lee"]
CATEGORIES = {
    "Tents": (["Summit", "Ridge", "Trail", "Basecamp"], 149, 649),
    "Backpacks": (["Daypack", "Trek", "Alpine", "Commuter"], 49, 289),
    "Sleeping bags": (["Down", "Synthetic", "Ultralight"], 79, 399),
    "Footwear": (["Hiking boot", "Trail runner", "Approach shoe"], 89, 239),
    "Apparel": (["Rain jacket", "Fleece", "Base layer", "Softshell"], 29, 259),
    "Cooking": (["Stove", "Pot set", "Mug", "Water filter"], 12, 149),
    "Accessories": (["Headlamp", "Trekking poles", "Dry bag", "Map case"], 9, 119),
}
BRANDS = ["Acme", "Northpeak", "Fjellt", "Cirrus", "Ironwood"]


def write(path, header, rows):
    full = os.path.join(ROOT, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    print(f"wrote {len(rows):>6} rows  examples/data/{path}")


def pick(weighted):
    r = rng.random() * sum(w for _, w, *_ in weighted)
    for item in weighted:
        r -= item[1]
        if r <= 0:
            return item
    return weighted[-1]


def season(day):
    """Demand multiplier: summer hiking season, a December peak, gentle growth."""
    doy = day.timetuple().tm_yday
    summer = 1 + 0.35 * math.sin((doy - 100) / 365 * 2 * math.pi)
    december = 1.6 if day.month == 12 and day.day < 22 else 1.0
    growth = 1 + 0.45 * (day - START).days / DAYS
    return summer * december * growth


# Products
products = []
pid = 100
for category, (kinds, lo, hi) in CATEGORIES.items():
    for kind in kinds:
        for _ in range(rng.randint(3, 5)):
            pid += 1
            brand = rng.choice(BRANDS)
            price = round(rng.uniform(lo, hi), 0) - 0.01
            cost = round(price * rng.uniform(0.38, 0.62), 2)
            name = f"{brand} {kind} {rng.choice(['Pro', 'Lite', 'X', 'Classic', '2', 'Plus'])}"
            products.append([pid, f"SKU-{pid:05d}", name, category, brand, f"{price:.2f}", f"{cost:.2f}",
                             "true" if rng.random() > 0.06 else "false"])
write("shop/products.csv", ["product_id", "sku", "name", "category", "brand", "price", "cost", "active"],
      products)

# Marketing: daily spend per paid channel; sessions drive sign-ups and orders.
spend_rows = []
campaigns = {"google_ads": ["search_brand", "search_generic", "shopping"], "meta_ads": ["prospecting", "retargeting"],
             "tiktok_ads": ["creators"], "email": ["newsletter", "winback"], "affiliate": ["partners"]}
base_spend = {"google_ads": 85, "meta_ads": 60, "tiktok_ads": 28, "email": 7, "affiliate": 18}
cpc = {"google_ads": 0.85, "meta_ads": 0.55, "tiktok_ads": 0.35, "email": 0.05, "affiliate": 0.6}
for d in range(DAYS):
    day = START + dt.timedelta(days=d)
    for ch in PAID:
        spend = base_spend[ch] * season(day) * rng.uniform(0.7, 1.3)
        clicks = int(spend / cpc[ch] * rng.uniform(0.8, 1.2))
        impressions = int(clicks * rng.uniform(35, 90))
        sessions = int(clicks * rng.uniform(0.75, 0.95))
        spend_rows.append([day.isoformat(), ch, rng.choice(campaigns[ch]), f"{spend:.2f}", impressions, clicks,
                           sessions])
write("crm/marketing_spend.csv", ["date", "channel", "campaign", "spend", "impressions", "clicks", "sessions"],
      spend_rows)

# Customers
customers = []
for cid in range(1, 2401):
    country, _, cities = pick(COUNTRIES)
    first, last = rng.choice(FIRST), rng.choice(LAST)
    # Sign-ups follow demand: sample a day weighted by season.
    while True:
        day = START + dt.timedelta(days=rng.randrange(DAYS))
        if rng.random() < season(day) / 2.4:
            break
    channel = pick(CHANNELS)[0]
    customers.append([cid, first, last, f"{first.lower()}.{last.lower()}{cid}@example.com", country,
                      rng.choice(cities), day.isoformat(), channel,
                      "business" if rng.random() < 0.12 else "consumer",
                      "true" if rng.random() < 0.58 else "false"])
write("shop/customers.csv", ["customer_id", "first_name", "last_name", "email", "country", "city", "signup_date",
                             "acquisition_channel", "segment", "marketing_opt_in"], customers)

# Orders and their items
orders, items = [], []
oid, iid = 50000, 0
active_products = [p for p in products if p[7] == "true"]
for c in customers:
    cid, signup = c[0], dt.date.fromisoformat(c[6])
    loyal = rng.random()
    n_orders = 1 if loyal < 0.55 else (2 if loyal < 0.8 else rng.randint(3, 9))
    if rng.random() < 0.12:
        n_orders = 0  # signed up, never bought
    day = signup
    for _ in range(n_orders):
        if day > END:
            break
        oid += 1
        ts = dt.datetime.combine(day, dt.time(rng.randint(6, 23), rng.randint(0, 59), rng.randint(0, 59)))
        status = rng.choices(["completed", "shipped", "cancelled", "refunded", "pending"],
                             [0.78, 0.06, 0.07, 0.05, 0.04])[0]
        if (END - day).days > 14 and status in ("shipped", "pending"):
            status = "completed"
        subtotal = 0.0
        for _ in range(rng.choices([1, 2, 3, 4], [0.5, 0.3, 0.15, 0.05])[0]):
            iid += 1
            p = rng.choice(active_products)
            qty = rng.choices([1, 2, 3], [0.8, 0.15, 0.05])[0]
            price = float(p[5])
            disc = round(price * qty * rng.choice([0, 0, 0, 0.1, 0.15]), 2)
            line = round(price * qty - disc, 2)
            subtotal += line
            items.append([iid, oid, p[0], qty, f"{price:.2f}", f"{disc:.2f}", f"{line:.2f}"])
        shipping = 0.0 if subtotal >= 100 else 6.95
        tax = round(subtotal * 0.08, 2)
        total = round(subtotal + shipping + tax, 2)
        updated = ts + dt.timedelta(hours=rng.randint(1, 240))
        orders.append([oid, cid, ts.isoformat(sep=" "), status, rng.choices(["web", "mobile", "marketplace"],
                                                                          [0.6, 0.3, 0.1])[0],
                       "USD", f"{subtotal:.2f}", f"{shipping:.2f}", f"{tax:.2f}", f"{total:.2f}",
                       updated.isoformat(sep=" ")])
        day = day + dt.timedelta(days=rng.randint(12, 160))
orders.sort(key=lambda o: o[2])
write("shop/orders.csv", ["order_id", "customer_id", "ordered_at", "status", "sales_channel", "currency",
                          "subtotal", "shipping", "tax", "amount", "updated_at"], orders)
items.sort(key=lambda i: i[0])
write("shop/order_items.csv", ["order_item_id", "order_id", "product_id", "quantity", "unit_price", "discount",
                               "line_total"], items)

# Support tickets: some about an order, most resolved, some rated.
tickets = []
tid = 9000
agents = ["alice", "bob", "chen", "dana", "emil"]
for o in orders:
    if rng.random() > 0.28:
        continue
    tid += 1
    created = dt.datetime.fromisoformat(o[2]) + dt.timedelta(hours=rng.randint(2, 400))
    category = rng.choices(["shipping", "refund", "product", "account", "billing"],
                           [0.35, 0.2, 0.25, 0.1, 0.1])[0]
    priority = rng.choices(["low", "normal", "high", "urgent"], [0.25, 0.5, 0.2, 0.05])[0]
    open_ = created.date() > END - dt.timedelta(days=10) and rng.random() < 0.5
    hours = rng.lognormvariate(2.6 if priority in ("high", "urgent") else 3.3, 0.8)
    resolved = None if open_ else created + dt.timedelta(hours=round(hours, 1))
    status = "open" if open_ else rng.choices(["solved", "closed"], [0.3, 0.7])[0]
    csat = ""
    if resolved and rng.random() < 0.45:
        csat = rng.choices([1, 2, 3, 4, 5], [0.05, 0.07, 0.13, 0.35, 0.4] if hours < 30 else
                           [0.15, 0.15, 0.25, 0.25, 0.2])[0]
    tickets.append([tid, o[1], o[0], created.isoformat(sep=" ", timespec="seconds"),
                    resolved.isoformat(sep=" ", timespec="seconds") if resolved else "",
                    rng.choices(["email", "chat", "phone"], [0.5, 0.35, 0.15])[0], category, priority, status,
                    csat, rng.choice(agents)])
tickets.sort(key=lambda t: t[3])
write("crm/support_tickets.csv", ["ticket_id", "customer_id", "order_id", "created_at", "resolved_at", "channel",
                                  "category", "priority", "status", "csat_score", "agent"], tickets)
