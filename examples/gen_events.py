#!/usr/bin/env python3
"""Generates examples/events.jsonl: one day (2026-11-25, UTC) of sample business events for
the workloads in examples/sluice.toml.

Stdlib only and deterministic: a fixed seed, no set iteration, no clock. Running it again
writes a byte-identical file.

    python3 examples/gen_events.py            # writes examples/events.jsonl next to this file
    python3 examples/gen_events.py OUT.jsonl  # writes elsewhere

Each line is one event in sluice's ingest format:
    {"type": "...", "idempotency_key": "...", "payload": {...}}
sorted by the time it happened (the payload's *_at field).

The company behind the events is "Brightlane", a fictional B2B analytics SaaS.
"""

import json
import os
import random
import sys
import unicodedata
from datetime import datetime, timedelta, timezone

SEED = 20261125
DAY = datetime(2026, 11, 25, tzinfo=timezone.utc)
REPORT_DATE = "2026-11-24"

rng = random.Random(SEED)


# ── helpers ────────────────────────────────────────────────────────────────────────────────────


def iso(seconds):
    """Seconds since 2026-11-25T00:00:00Z as an ISO-8601 UTC timestamp."""
    return (DAY + timedelta(seconds=int(seconds))).strftime("%Y-%m-%dT%H:%M:%SZ")


def at(h, m=0, s=0):
    return h * 3600 + m * 60 + s


# Tickets, forms and leads: business hours, European morning peak, a second bump when the US
# wakes up, a thin night for APAC.
BUSINESS_HOURS = [1, 1, 1, 1, 1, 2, 4, 8, 14, 18, 16, 12, 9, 11, 14, 13, 10, 7, 5, 4, 3, 2, 1, 1]
# Payments: all day, quieter at night.
ALL_DAY = [3, 2, 2, 2, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6, 7, 7, 7, 6, 6, 5, 5, 4, 4, 3]
# Social: spread out, a bit more while people are awake somewhere.
SOCIAL_HOURS = [2, 2, 1, 1, 2, 2, 3, 4, 5, 5, 5, 5, 5, 5, 6, 6, 6, 5, 5, 4, 4, 3, 3, 2]


def time_in(weights):
    h = rng.choices(range(24), weights=weights)[0]
    return at(h, rng.randrange(60), rng.randrange(60))


def between(start, end):
    return rng.randrange(start, end)


def ascii_fold(s):
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")


def slug(s):
    return "".join(c for c in ascii_fold(s).lower().replace(" ", "-") if c.isalnum() or c == "-")


def money(x):
    """Rounded to cents; whole amounts as integers so they read as 1188 rather than 1188.0."""
    x = round(x, 2)
    return int(x) if x == int(x) else x


def words(s):
    return len(s.split())


ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def token(n):
    return "".join(rng.choice(ALNUM) for _ in range(n))


def fill(text, values):
    for k, v in values.items():
        text = text.replace("{" + k + "}", str(v))
    return text


# ── people and companies ───────────────────────────────────────────────────────────────────────

NAME_GROUPS = {
    "en": (
        ["Emma", "Liam", "Olivia", "Ethan", "Rachel", "David", "Sarah", "Michael", "Jennifer",
         "Kevin", "Megan", "Brian", "Grace", "Tom", "Aaron", "Leah", "Chloe", "Ryan", "Hannah", "Jack"],
        ["Smith", "Johnson", "Brooks", "Hughes", "Walsh", "Campbell", "Thompson", "Rivera",
         "Murphy", "O'Brien", "Carter", "Bennett", "Foster", "Reed", "Patterson", "Nguyen"],
    ),
    "de": (["Jonas", "Lena", "Felix", "Clara", "Lukas", "Anna", "Tobias", "Katrin", "Moritz", "Julia"],
           ["Müller", "Schmidt", "Fischer", "Weber", "Becker", "Hoffmann", "Wagner", "Krüger"]),
    "es": (["Sofía", "Mateo", "Camila", "Diego", "Lucía", "Javier", "Valentina", "Andrés"],
           ["García", "Fernández", "Reyes", "Morales", "López", "Ortega", "Navarro", "Castillo"]),
    "it": (["Luca", "Giulia", "Marco", "Chiara", "Francesca", "Matteo"],
           ["Rossi", "Bianchi", "Romano", "Colombo", "Ricci", "Greco"]),
    "fr": (["Camille", "Hugo", "Chloé", "Julien", "Manon", "Théo"],
           ["Dubois", "Martin", "Lefebvre", "Moreau", "Laurent", "Girard"]),
    "nl": (["Daan", "Sanne", "Bram", "Femke", "Lotte", "Ruben"],
           ["de Vries", "van Dijk", "Jansen", "Bakker", "Visser", "Smit"]),
    "nordic": (["Mikael", "Astrid", "Sanna", "Erik", "Ingrid", "Lars", "Freja", "Oskar"],
               ["Johansson", "Lindqvist", "Virtanen", "Andersen", "Hansen", "Nilsson", "Berg"]),
    "in": (["Priya", "Arjun", "Rahul", "Ananya", "Vikram", "Sneha", "Karthik", "Divya"],
           ["Patel", "Sharma", "Iyer", "Reddy", "Nair", "Gupta", "Menon"]),
    "jp": (["Yuki", "Haruto", "Sakura", "Kenji", "Aiko", "Ren"],
           ["Tanaka", "Sato", "Suzuki", "Kobayashi", "Watanabe", "Ito"]),
    "sg": (["Wei", "Mei", "Jun", "Xin", "Hui Min", "Darren"],
           ["Tan", "Lim", "Wong", "Ng", "Lee", "Chua"]),
    "za": (["Thandiwe", "Sipho", "Zanele", "Kwame", "Ama", "Chinedu", "Ngozi", "Pieter"],
           ["Dlamini", "Nkosi", "Mensah", "Okafor", "Adeyemi", "Botha", "Naidoo"]),
    "br": (["Tiago", "Ana", "Pedro", "Júlia", "Rafael", "Beatriz"],
           ["Silva", "Santos", "Oliveira", "Costa", "Pereira", "Almeida"]),
    "pl": (["Jakub", "Zofia", "Katarzyna", "Tomasz", "Piotr", "Marta"],
           ["Kowalski", "Nowak", "Wiśniewska", "Zieliński", "Wójcik", "Kamińska"]),
}

COUNTRY_GROUP = {
    "US": "en", "CA": "en", "GB": "en", "IE": "en", "AU": "en", "NZ": "en",
    "DE": "de", "AT": "de", "CH": "de", "ES": "es", "MX": "es", "AR": "es", "IT": "it",
    "FR": "fr", "NL": "nl", "BE": "nl", "SE": "nordic", "NO": "nordic", "DK": "nordic",
    "FI": "nordic", "IN": "in", "JP": "jp", "SG": "sg", "ZA": "za", "NG": "za", "GH": "za",
    "BR": "br", "PT": "br", "PL": "pl", "EE": "nordic",
}

COUNTRY_NAME = {
    "US": "United States", "CA": "Canada", "GB": "United Kingdom", "IE": "Ireland",
    "AU": "Australia", "NZ": "New Zealand", "DE": "Germany", "AT": "Austria", "CH": "Switzerland",
    "ES": "Spain", "MX": "Mexico", "IT": "Italy", "FR": "France", "NL": "Netherlands",
    "SE": "Sweden", "NO": "Norway", "DK": "Denmark", "FI": "Finland", "IN": "India", "JP": "Japan",
    "SG": "Singapore", "ZA": "South Africa", "NG": "Nigeria", "BR": "Brazil", "PL": "Poland",
    "EE": "Estonia", "PT": "Portugal", "BE": "Belgium",
}


def person(country):
    firsts, lasts = NAME_GROUPS[COUNTRY_GROUP.get(country, "en")]
    return rng.choice(firsts), rng.choice(lasts)


def email_for(first, last, domain, style=None):
    f = ascii_fold(first).lower().replace(" ", "").replace("'", "")
    l = ascii_fold(last).lower().replace(" ", "").replace("'", "")
    style = style if style is not None else rng.randrange(4)
    local = [f"{f}.{l}", f"{f[0]}{l}", f, f"{f}{l[0]}"][style]
    return f"{local}@{domain}"


# Brightlane's customers: (company, domain, country, plan, seats)
CUSTOMERS = [
    ("Northwind Logistics", "northwindlogistics.com", "US", "business", 85),
    ("Halcyon Health", "halcyonhealth.com", "US", "enterprise", 340),
    ("Pinecrest Capital", "pinecrestcap.com", "US", "business", 42),
    ("Kestrel Freight", "kestrelfreight.co.uk", "GB", "business", 60),
    ("Tidewater Foods", "tidewaterfoods.com", "US", "team", 18),
    ("Lumen Dental Group", "lumendental.ca", "CA", "team", 12),
    ("Copperleaf Energy", "copperleaf-energy.com", "US", "enterprise", 220),
    ("Solberg Maritime", "solbergmaritime.no", "NO", "business", 35),
    ("Aurelia Cosmetics", "aurelia-cosmetics.fr", "FR", "team", 9),
    ("Fjordline Software", "fjordline.io", "SE", "team", 14),
    ("Quillon Legal", "quillonlegal.co.uk", "GB", "business", 28),
    ("Meridian Labs", "meridianlabs.io", "US", "team", 7),
    ("Stonebridge Manufacturing", "stonebridge-mfg.com", "US", "enterprise", 410),
    ("Helix Biotech", "helixbio.de", "DE", "business", 55),
    ("Tandem Bikes", "tandembikes.nl", "NL", "team", 6),
    ("Orchard Retail Group", "orchardretail.com.au", "AU", "enterprise", 180),
    ("Nimbus Hosting", "nimbushosting.de", "DE", "team", 16),
    ("Redwood Staffing", "redwoodstaffing.com", "US", "business", 48),
    ("Silverline Telecom", "silverline.ie", "IE", "business", 70),
    ("Juniper Education", "junipereducation.org", "US", "enterprise", 260),
    ("Kaleido Media", "kaleidomedia.es", "ES", "team", 11),
    ("Ferro Acciai", "ferroacciai.it", "IT", "business", 38),
    ("Atlas Payroll", "atlaspayroll.com", "US", "business", 64),
    ("Cobalt Security", "cobaltsec.com", "US", "enterprise", 150),
    ("Elmstead Properties", "elmstead.co.uk", "GB", "team", 10),
    ("Praxis Consulting", "praxisconsulting.de", "DE", "team", 22),
    ("Mosaic Learning", "mosaiclearning.ca", "CA", "business", 30),
    ("Duarte Engenharia", "duarte-eng.com.br", "BR", "team", 15),
    ("Kobayashi Trading", "kobayashi-trading.co.jp", "JP", "business", 40),
    ("Sunbird Solar", "sunbirdsolar.com.au", "AU", "team", 8),
    ("Vireo Pharmacy", "vireopharmacy.com", "US", "business", 52),
    ("Hawthorne Credit Union", "hawthornecu.org", "US", "enterprise", 120),
    ("Lindqvist Bygg", "lindqvistbygg.se", "SE", "team", 13),
    ("Marlowe & Finch", "marlowefinch.co.uk", "GB", "business", 26),
    ("Greywater Studios", "greywaterstudios.com", "US", "team", 5),
    ("Parkway Medical", "parkwaymedical.com", "US", "business", 75),
    ("Wildflower Agency", "wildflower.agency", "NL", "team", 9),
    ("Okapi Insights", "okapiinsights.co.za", "ZA", "team", 12),
    ("Bayview Hotels", "bayviewhotels.sg", "SG", "business", 44),
    ("Mandala Retail", "mandalaretail.in", "IN", "business", 58),
    ("Hanseatic Shipping", "hanseatic-shipping.de", "DE", "enterprise", 190),
    ("Polar Analytics", "polaranalytics.fi", "FI", "team", 7),
    # free plan: small teams and individuals
    ("Studio Kettle", "studiokettle.com", "GB", "free", 2),
    ("Rook & Pawn Games", "rookandpawn.games", "US", "free", 3),
    ("Lakeside Yoga", "lakesideyoga.ca", "CA", "free", 1),
    ("Hollis Design", "gmail.com", "US", "free", 1),
    ("Ostrander Tutoring", "outlook.com", "AU", "free", 1),
    ("Café Nube", "cafenube.mx", "MX", "free", 2),
]

CURRENCY = {
    "US": "USD", "CA": "CAD", "GB": "GBP", "IE": "EUR", "DE": "EUR", "FR": "EUR", "NL": "EUR",
    "ES": "EUR", "IT": "EUR", "FI": "EUR", "SE": "SEK", "NO": "NOK", "AU": "AUD", "JP": "JPY",
    "BR": "USD", "MX": "USD", "SG": "USD", "IN": "USD", "ZA": "USD",
}
FX = {"USD": 1.0, "EUR": 0.94, "GBP": 0.79, "CAD": 1.39, "AUD": 1.53, "SEK": 10.6, "NOK": 10.9,
      "JPY": 151.0}
SYMBOL = {"USD": "$", "EUR": "€", "GBP": "£", "CAD": "CA$", "AUD": "A$", "SEK": "SEK ",
          "NOK": "NOK ", "JPY": "¥"}
SEAT_PRICE_USD = {"team": 15.0, "business": 40.0, "enterprise": 55.0}


def local_amount(usd, currency):
    v = usd * FX[currency]
    if currency == "JPY":
        return int(round(v, -2))
    if currency in ("SEK", "NOK"):
        return money(round(v))
    return money(v)


def fmt_money(v, currency):
    if currency == "JPY":
        return f"¥{int(v):,}"
    return f"{SYMBOL[currency]}{v:,.2f}"


class Customer:
    def __init__(self, idx, company, domain, country, plan, seats):
        self.company, self.domain, self.country, self.plan, self.seats = (
            company, domain, country, plan, seats)
        self.customer_id = "cus_" + token(12)
        self.currency = CURRENCY.get(country, "USD")
        # a few contacts per company who write in
        self.contacts = []
        for _ in range(3):
            first, last = person(country)
            if domain in ("gmail.com", "outlook.com"):
                mail = f"{slug(first)}.{slug(last)}{rng.randrange(10, 99)}@{domain}"
            else:
                mail = email_for(first, last, domain)
            self.contacts.append((first, last, mail))


CUST = [Customer(i, *c) for i, c in enumerate(CUSTOMERS)]
PAYING = [c for c in CUST if c.plan != "free"]

# Self-serve customers nobody on support has met: they only show up as payments.
for _ in range(24):
    country = rng.choice(["US", "US", "US", "GB", "DE", "CA", "AU", "FR", "NL", "ES", "SE", "IE"])
    c = Customer(0, "", "", country, rng.choice(["team", "team", "team", "business"]),
                 rng.randrange(3, 30))
    PAYING.append(c)


# ── tickets ────────────────────────────────────────────────────────────────────────────────────

# (category, allowed plans: f/t/b/e, subject, body). Placeholders are filled per ticket.
TICKETS = [
    ("billing", "tbe", "Charged twice for November",
     "Hi, our card was charged twice on November 1 for the same renewal ({amount} each). Invoice "
     "{inv} appears once on the billing page, but our bank statement shows two identical "
     "transactions. Can you refund the duplicate? Our finance team closes the month on Friday, so a "
     "quick answer would be much appreciated.\n\nThanks,\n{first}"),
    ("billing", "tbe", "Invoice bills us for too many seats",
     "Invoice {inv} bills us for {seats} seats, but we deactivated 6 users on November 3 and the "
     "admin page shows {seats_minus} active. I assumed deactivated users stop counting right away? "
     "Please correct the invoice or explain how the proration works. We're on annual billing, if "
     "that matters."),
    ("billing", "tbe", "VAT number missing from invoice",
     "Hello, our accounts payable department rejected invoice {inv} because it doesn't show our "
     "VAT ID. We added it under Settings > Billing last week (DE{vat}) but the PDF still doesn't "
     "include it. Could you reissue the invoice with the VAT number and the reverse-charge note? "
     "We can't pay it otherwise.\n\nBest regards,\n{first} {last}"),
    ("billing", "tb", "Charged after cancelling",
     "We cancelled our subscription on October 28 (I have the confirmation email) and today we "
     "were charged {amount} again. Nobody on our side has logged in since. I'd like a full refund "
     "of this charge, and please confirm the account is actually closed so this doesn't happen "
     "again next month. If we can't sort this out I'll have to dispute it with the bank."),
    ("billing", "tb", "Switching from monthly to annual billing",
     "We'd like to move from monthly to annual billing to get the discount. Do we get credit for "
     "the remaining days of this month's cycle, and will the annual price lock in our current "
     "per-seat rate? Also, can the annual invoice be paid by bank transfer instead of card? "
     "Procurement prefers that for anything over $10k."),
    ("billing", "tbe", "Payment failed email, but the card was charged?",
     "We got an email saying our payment failed and the workspace will be downgraded in 7 days, "
     "but the charge of {amount} is on our card statement and it's not pending. Which one is "
     "right? I don't want the team losing access in the middle of quarter-end reporting."),
    ("billing", "be", "Unexpected API overage on invoice",
     "This month's invoice has a line 'API overage - 1.2M calls' for {amount2} that we've never "
     "seen before. As far as I know our usage didn't change. Where can I see API calls broken "
     "down by key? If it's a runaway integration on our side, fine, but I'd like to understand it "
     "before we pay {inv}."),
    ("billing", "tbe", "Update billing contact",
     "Please change the billing contact on our account from {user} (who left the company last "
     "month) to me, and send future invoices to ap@{domain}. I don't have owner permissions so I "
     "can't change it in settings myself. Our CFO is cc'd to confirm.\n\n{first}"),
    ("billing", "be", "Refund for unused seats",
     "We bought 25 extra seats in September for a project that was cancelled a few weeks later. "
     "Only 3 of them were ever assigned. Is there any way to get a partial refund, or a credit "
     "towards next year's renewal? Happy to remove the seats today."),
    ("billing", "be", "PO number needed on renewal invoice",
     "Our purchase order number for the 2027 renewal is PO-{po}. Can you add it to the upcoming "
     "invoice? Without a PO reference our system auto-rejects invoices and it takes weeks to "
     "unstick them. The renewal date is December 15, so please send the corrected invoice to "
     "ap@{domain} once it's updated."),
    ("billing", "tbe", "W-9 and insurance certificate for vendor onboarding",
     "Our vendor onboarding requires a W-9 and a certificate of insurance from Brightlane before "
     "we can pay invoice {inv}. Who can send these? AP won't release the payment without them, "
     "and it's already 12 days past due, which I'd rather not explain to my boss."),
    ("billing", "b", "What do we lose if we downgrade to Team?",
     "We'd like to downgrade from Business to Team at our renewal. What exactly do we lose? "
     "Specifically: do we keep SSO and the audit log history, and what happens to the 14 "
     "dashboards that are over the Team limit? We don't want anything deleted without warning."),
    ("bug", "tbe", "CSV export times out on large reports",
     "Exporting the 'Pipeline by region' report to CSV fails every time since yesterday. The "
     "spinner runs for about a minute, then shows 'Export failed: upstream request timeout "
     "(504)'. Smaller date ranges work, anything over 90 days fails. The report has roughly 180k "
     "rows. Request ID from the network tab: {req}. This is blocking our monthly board pack."),
    ("bug", "ftbe", "Dashboard charts blank in Safari",
     "Since this morning every chart on our dashboards renders as an empty white box in Safari 19 "
     "on macOS. The same dashboards work fine in Chrome. The console shows:\n\nTypeError: "
     "undefined is not an object (evaluating 'e.series.map')\n\nHalf of our leadership team uses "
     "Safari, so this is pretty visible. Can you take a look?"),
    ("bug", "be", "Webhooks delivered twice",
     "We're receiving every record.updated webhook twice, 200-400 ms apart, with the same event "
     "ID. Our endpoint responds 200 within 50 ms, so it shouldn't be a retry. It started around "
     "{date}. We dedupe on event ID now, but some of our other consumers don't. Endpoint: "
     "https://hooks.{domain}/brightlane"),
    ("bug", "tbe", "Salesforce sync failing with INVALID_FIELD",
     "The Salesforce sync stopped at 06:12 today with:\n\nSync error: INVALID_FIELD: No such "
     "column 'Region__c' on entity 'Opportunity'\n\nWe renamed that field to Sales_Region__c last "
     "night. How do I update the mapping? The field mapping screen still shows the old name and "
     "won't let me pick the new one."),
    ("bug", "tbe", "Scheduled report emails not arriving",
     "Our weekly scheduled reports didn't arrive on Monday for anyone on the team. The schedule "
     "page says 'Last sent: Nov 23 07:00' with a green check, but nobody got them, not even in "
     "spam. Our IT team confirmed nothing was blocked on our side. Could you check the mail logs "
     "for {domain}?"),
    ("bug", "tbe", "'Last 30 days' filter returns the wrong records",
     "When I filter a table by 'Closed date is in the last 30 days', records closed 31 days ago "
     "still show up and some from yesterday are missing. I suspect a timezone problem: our "
     "workspace is set to America/Chicago. Screenshots attached. It's making our weekly numbers "
     "disagree with the CRM and I spend every Monday explaining why."),
    ("bug", "be", "Bulk update endpoint returns 500 above 500 records",
     "POST /v2/records/bulk returns HTTP 500 with body {\"error\": \"internal\", \"request_id\": "
     "\"{req}\"} whenever the batch has more than 500 records. The docs say the limit is 1,000. "
     "Batches of 400 work fine. We can split them, but wanted to report it since it looks like a "
     "bug rather than a documented limit."),
    ("bug", "tbe", "Android app crashes after SSO login",
     "The Android app (4.12.0) crashes right after I sign in with SSO. It shows the Okta screen, I "
     "approve the push, then the app closes. Reinstalling didn't help. Pixel 8, Android 16. Three "
     "other people on my team have the same problem; the iPhone users are fine."),
    ("bug", "tbe", "Import created duplicates instead of updating",
     "I imported a CSV of 2,300 contacts with 'update existing records by email' selected, and it "
     "created duplicates for about 400 of them instead of updating. It seems to happen when the "
     "email in the file has capital letters. Is there a way to merge these in bulk? Doing it by "
     "hand isn't an option."),
    ("bug", "tbe", "Viewers can rearrange shared dashboards",
     "Users with the Viewer role can move and resize widgets on shared dashboards, and the "
     "changes are saved for everyone. That has to be a bug: a viewer shouldn't be able to change "
     "a shared layout. We noticed because someone accidentally removed a chart from the exec "
     "dashboard right before the Monday meeting."),
    ("bug", "be", "PDF export rounds currency values",
     "In PDF exports, currency values are rounded to whole thousands ('$1,240K') even though the "
     "dashboard shows exact values and the number format is set to 2 decimals. Finance needs "
     "exact figures in the PDF that goes to the board. The CSV export is fine."),
    ("bug", "tbe", "Slack alerts stopped: channel_not_found",
     "Our alert rules haven't posted anything to #ops-alerts since Friday. The integrations page "
     "shows Slack as connected. When I click 'Send test message' I get 'channel_not_found', but "
     "the channel definitely exists and the Brightlane app is a member. Did something change "
     "with the Slack app?"),
    ("bug", "tbe", "Formula field shows #ERROR since the last release",
     "Since last night's release our formula field margin = (revenue - cost) / revenue shows "
     "#ERROR on rows where cost is empty. Before the update an empty value was treated as 0. Was "
     "this change intentional? It broke three reports that go out to store managers every "
     "morning."),
    ("bug", "tbe", "Search ignores accented names",
     "Searching for 'Jose' doesn't return records named 'José', and 'Muller' misses 'Müller'. We "
     "have a lot of customers in Spain and Germany, so this matters for our account managers. Is "
     "there a setting for accent-insensitive search, or is this a bug?"),
    ("bug", "tbe", "'Last week' preset shows different ranges on one dashboard",
     "The 'Last week' preset shows Nov 16-22 on some widgets and Nov 17-23 on others, on the same "
     "dashboard. It looks like some widgets start the week on Sunday and others on Monday. The "
     "workspace setting is Monday. Which one is right, and how do I make them consistent?"),
    ("bug", "be", "API pagination skips records",
     "Paginating /v2/records with a cursor and page_size=500 returns 11,842 records in total, but "
     "the count endpoint says 11,900. Running it twice gives a different set of missing records. "
     "Records are being updated while we paginate: is the cursor not stable under writes? Request "
     "ID of the last page: {req}."),
    ("bug", "be", "Charts not readable with a screen reader",
     "One of our analysts uses NVDA, and none of the chart values are announced; every chart is "
     "just 'graphic'. Is there an accessible table view or ARIA labels we can turn on? As a "
     "public-sector body this is a legal requirement for us, so it affects our renewal."),
    ("how-to", "ftbe", "Sharing a dashboard with an external client",
     "Is there a way to share a single dashboard with a client who doesn't have a Brightlane "
     "account? Read-only, ideally, and without them seeing the rest of our workspace. I read "
     "something about public links but can't find it in the share menu. We're on the {plan} plan "
     "if that changes anything."),
    ("how-to", "be", "Row-level permissions per region",
     "We want regional managers to see only the deals from their own region, on the same "
     "dashboard. Is that possible with row-level permissions, or do we need a separate dashboard "
     "per region? We have 8 regions and would rather not maintain 8 copies."),
    ("how-to", "tbe", "API rate limits for a nightly sync",
     "What are the API rate limits on our plan? We're building a nightly sync that reads about "
     "200k records and I want to make sure we don't get throttled halfway through. Is there a "
     "bulk read endpoint, or should we paginate /v2/records with the maximum page size?"),
    ("how-to", "be", "Connecting Snowflake with key-pair auth",
     "We'd like to connect our Snowflake warehouse as a data source. The docs mention key-pair "
     "authentication: where do I paste the private key, and which role and grants does the "
     "Brightlane user need? Our security team wants the minimum privileges possible."),
    ("how-to", "tbe", "Restore a deleted report",
     "One of our analysts deleted a report called 'Q4 Forecast v3' by mistake yesterday "
     "afternoon. Is there a trash or version history we can restore it from? It had a lot of "
     "custom formulas we'd hate to rebuild, and the finance team needs it for Thursday's forecast "
     "review."),
    ("how-to", "ftbe", "Changing the workspace timezone",
     "How do I change our workspace timezone from UTC to Europe/Berlin? Will that change the "
     "dates stored on existing records, or only how they're displayed? I don't want to break the "
     "scheduled reports that go out every morning. Most of our team moved to the Berlin office "
     "and the times on charts confuse everyone."),
    ("how-to", "tbe", "Full data export before our contract ends",
     "Our contract ends in January and we need a complete export of our data for our records: "
     "all records, attachments and audit logs. What format is it in and how long does it take? "
     "Can it be delivered to an S3 bucket rather than a download link?"),
    ("how-to", "ftbe", "Conditional formatting in table widgets",
     "Can I highlight rows in a table widget when a value drops below a threshold, e.g. red when "
     "stock < 10? I found the number format options but nothing for colours. Our warehouse team "
     "would really like this for the Black Friday weekend."),
    ("how-to", "be", "Inviting 140 users at once",
     "We're rolling Brightlane out to 140 people next week. Is there a way to invite users in "
     "bulk from a CSV and assign them to teams at the same time? Clicking through the invite "
     "dialog 140 times isn't realistic. We don't have SSO set up yet, so SCIM isn't an option "
     "either."),
    ("how-to", "ftbe", "Embedding a chart in Notion",
     "Can we embed a live Brightlane chart in a Notion page? I tried the embed link, but Notion "
     "shows 'refused to connect'. Is there an iframe allowlist we need to configure somewhere? "
     "Our team plans live in Notion and it would be great to have the weekly numbers right there "
     "instead of a link nobody clicks."),
    ("how-to", "f", "Free plan dashboard limit",
     "I'm on the free plan, evaluating Brightlane for my team. It says 3 dashboards maximum. Does "
     "that include dashboards other people shared with me? I hit the limit after creating only "
     "two of my own. If shared dashboards count, I'll need to ask colleagues to stop sharing with "
     "me until we decide whether to upgrade."),
    ("account", "be", "SAML SSO broken after certificate rotation",
     "We rotated our Azure AD signing certificate this morning and now every login fails with "
     "'SAML response signature invalid'. I uploaded the new certificate in Settings > Security > "
     "SSO but the error persists. Nobody except the two admins with password login can get in: "
     "300+ users locked out. Please help urgently."),
    ("account", "ftbe", "Locked out: lost my 2FA device",
     "I lost my phone over the weekend and can't get past two-factor authentication. I don't have "
     "the backup codes. I'm the only admin on our workspace, so nobody else can reset it for me. "
     "What do you need from me to verify my identity?"),
    ("account", "tbe", "Transferring workspace ownership",
     "{user} is leaving the company at the end of the month and is currently the owner of our "
     "workspace. How do we transfer ownership to me before they leave? I'm already an admin. "
     "Will anything they created, like dashboards, scheduled reports or API keys, stop working "
     "once their account is deactivated?"),
    ("account", "be", "SCIM deprovisioning doesn't deactivate users",
     "We use Okta SCIM provisioning. New users are created fine, but when we unassign someone in "
     "Okta they stay active in Brightlane and keep using a seat. The Okta logs show the PATCH "
     "going out with active=false and getting a 200 back. Is deprovisioning supported?"),
    ("account", "be", "Merging two workspaces after an acquisition",
     "After an acquisition we have two Brightlane workspaces: {company} and our new subsidiary's. "
     "Can they be merged into one, keeping records, dashboards and users? Both are on Business "
     "plans. We'd like to do it before January if possible, and we'd rather not pay for two "
     "subscriptions longer than we have to."),
    ("account", "be", "Domain verification stuck on 'Pending'",
     "I'm trying to verify {domain} for SSO. I added the TXT record three days ago and dig shows "
     "it, but the verification page still says 'Pending'. Is there a way to trigger the check "
     "again? We can't switch on enforced SSO until the domain is verified, and our security "
     "team wants that done before the holidays."),
    ("account", "tbe", "Bulk-changing login emails after a rebrand",
     "Our company rebranded and everyone's email address moved to @{domain}. Can we update the "
     "login emails in bulk without people losing their dashboards, saved filters and "
     "subscriptions? About 40 users are affected. The old addresses will stop receiving mail at "
     "the end of December, so we'd like to do this before then."),
    ("account", "tbe", "New team member can't see the Finance folder",
     "A new colleague, {user}, was added to the Finance team yesterday but can't see the Finance "
     "folder or any dashboard in it. Other members of the team can. Their role is Editor. Logging "
     "out and back in didn't help."),
    ("account", "ftbe", "Password reset email never arrives",
     "I've requested a password reset four times in the last hour and no email arrives. I checked "
     "spam and our quarantine. My address is {email}. Other notifications from you reach me "
     "fine, so I don't think it's our mail server."),
    ("feature-request", "ftbe", "Dark mode?",
     "Any plans for a dark mode? Our support team has Brightlane open on a second screen all day "
     "and several people have asked for it. Even just for dashboards would help a lot. Bright "
     "white tables on a big monitor at 7pm are rough on the eyes, and a browser extension breaks "
     "the chart colours."),
    ("feature-request", "be", "API for audit logs",
     "Our security team needs to pull audit logs into our SIEM (Splunk). Right now we can only "
     "download them as CSV from the UI. Is an API or a streaming export planned? It's a "
     "requirement for our SOC 2 renewal in Q1."),
    ("feature-request", "tbe", "Business-hours-only alerts",
     "It would be great to limit alerts to business hours. Right now our on-call person gets "
     "pinged at 3am for things that can wait until morning. Something like 'only send between "
     "08:00 and 18:00 on weekdays' per alert rule would solve it."),
    ("feature-request", "tbe", "Microsoft Teams notifications",
     "We're a Teams shop, not Slack. Are Teams notifications on the roadmap? We currently forward "
     "alert emails into a Teams channel, which is clunky and people ignore it. If there's a "
     "beta we'd happily test it; about 90 people here would use it from day one."),
    ("feature-request", "tbe", "Custom fiscal year",
     "Our fiscal year starts in February. Date filters like 'this quarter' and 'year to date' use "
     "calendar quarters, which puts every financial dashboard off by a month. Can we set a custom "
     "fiscal year start? It's the main complaint from our finance team."),
    ("feature-request", "ftbe", "Scheduled export to Google Sheets",
     "We'd love a scheduled export straight into a Google Sheet, refreshed daily. Right now "
     "someone downloads a CSV every morning and pastes it in. Is this on the roadmap, or is there "
     "a workaround with the API? We've looked at Zapier but the report has more rows than its "
     "limits allow."),
    ("outage", "tbe", "Data sync stuck in 'Queued' for the EU workspace",
     "Our EU workspace hasn't synced from HubSpot since 06:00 UTC. The sync status has shown "
     "'Queued' for over two hours now. Our US workspace is syncing normally. Is there a problem "
     "with the EU sync workers? Sales is asking why this morning's leads aren't there."),
]

# The afternoon incident (14:19-14:55 UTC): several customers write in at once.
OUTAGE_TICKETS = [
    ("Dashboards not loading: 502 Bad Gateway",
     "None of our dashboards load since about 14:20 UTC. After a long wait we get '502 Bad "
     "Gateway'. The status page says all systems operational. The whole team is affected, in "
     "every browser. Is there an incident? We have a client review at 15:30 and the deck pulls "
     "live charts from Brightlane, so any ETA would help us decide whether to postpone."),
    ("URGENT: API returning 503",
     "All API calls from our integration are failing with 503 Service Unavailable since 14:22 "
     "UTC. Our order pipeline depends on it and orders are queuing up. Please confirm whether "
     "this is on your side and give us an ETA. This is the week before Black Friday."),
    ("Login page spins forever",
     "The login page spins for a long time and then shows 'Something went wrong. Please try "
     "again.' Tried incognito and a different network. Colleagues in our other office see the "
     "same thing, so it isn't just me. Our API integration seems to be timing out as well. "
     "Please let us know when it's fixed."),
    ("Webhooks delayed by 40+ minutes",
     "Webhook deliveries to our endpoint are arriving 40 to 50 minutes late this afternoon. "
     "Normally they arrive within seconds. Our endpoint logs show nothing wrong and we're "
     "responding 200. Is there a backlog on your side? Our warehouse system relies on these to "
     "release shipments, so we need to know whether to switch to polling."),
]

CHANNELS = {"free": ["web", "email"], "team": ["email", "chat", "web"],
            "business": ["email", "chat", "chat", "web"],
            "enterprise": ["email", "chat", "phone", "slack_connect"]}
PLAN_CODE = {"f": "free", "t": "team", "b": "business", "e": "enterprise"}


def ticket_values(c, contact):
    first, last, mail = contact
    seats = c.seats
    inv = f"INV-2026-{rng.randrange(10000, 99999):05d}"
    monthly = seats * SEAT_PRICE_USD.get(c.plan, 15.0)
    colleague = person(c.country)
    return {
        "first": first, "last": last, "email": mail, "company": c.company, "domain": c.domain,
        "plan": c.plan.capitalize(), "inv": inv, "seats": seats + 6,
        "seats_minus": seats, "amount": fmt_money(local_amount(monthly, c.currency), c.currency),
        "amount2": fmt_money(local_amount(rng.randrange(180, 2400), c.currency), c.currency),
        "vat": rng.randrange(100000000, 999999999), "po": rng.randrange(4500000000, 4599999999),
        "req": "req_" + token(20), "date": rng.choice(["November 18", "November 19", "Nov 20"]),
        "user": f"{colleague[0]} {colleague[1]}",
    }


def make_ticket(t, category, plans, subject, body, channel=None):
    allowed = [PLAN_CODE[p] for p in plans]
    c = rng.choice([x for x in CUST if x.plan in allowed])
    contact = rng.choice(c.contacts)
    values = ticket_values(c, contact)
    customer = {"name": f"{contact[0]} {contact[1]}", "email": contact[2], "plan": c.plan}
    if c.plan != "free":
        customer["company"] = c.company
    return t, {
        "ticket_id": None,  # numbered once sorted by time
        "created_at": iso(t),
        "channel": channel or rng.choice(CHANNELS[c.plan]),
        "customer": customer,
        "subject": fill(subject, values),
        "body": fill(body, values),
    }


def gen_tickets():
    out = []
    for category, plans, subject, body in TICKETS:
        if subject.startswith("Data sync stuck"):
            t = at(8, 14, 37)
        elif subject.startswith("SAML SSO broken"):
            t = at(7, 52, 11)
        else:
            t = time_in(BUSINESS_HOURS)
        out.append(make_ticket(t, category, plans, subject, body))
    # The incident: two tickets of each kind between 14:21 and 14:53.
    for i, (subject, body) in enumerate(OUTAGE_TICKETS * 2):
        t = between(at(14, 21), at(14, 53))
        out.append(make_ticket(t, "outage", "tbe", subject, body,
                               channel=rng.choice(["chat", "email", "phone"])))
    # Top up with a few common repeats from other customers.
    common = [x for x in TICKETS if x[0] in ("bug", "how-to", "account", "billing")]
    while len(out) < 70:
        category, plans, subject, body = rng.choice(common)
        out.append(make_ticket(time_in(BUSINESS_HOURS), category, plans, subject, body))
    out.sort(key=lambda x: x[0])
    events = []
    for n, (t, p) in enumerate(out):
        p["ticket_id"] = f"TKT-{10423 + n}"
        events.append((t, "ticket.created", f"tkt-{10423 + n}", p))
    return events


# ── leads ──────────────────────────────────────────────────────────────────────────────────────

# (title, company, employees, country, source, message)
LEADS = [
    ("VP of Operations", "Granite Peak Outfitters", 420, "US", "website_demo_request",
     "We're replacing a patchwork of spreadsheets for store operations reporting across 38 "
     "locations. Looking for something our regional managers can use without an analyst. "
     "Timeline is Q1."),
    ("Head of Data", "Volta Mobility", 1800, "DE", "g2",
     "Evaluating you against Looker and Sigma for self-serve dashboards on top of Snowflake. We "
     "need SSO, row-level security and EU data residency. Can we get a technical deep dive?"),
    ("Founder", "Tinyloop", 6, "GB", "organic_search",
     "just want to connect stripe and see MRR, is the free plan enough?"),
    ("Procurement Specialist", "City of Eastbrook", 2300, "US", "rfp_portal",
     "We are issuing an RFP for a citizen-services analytics platform. Please confirm whether you "
     "can meet StateRAMP Moderate requirements and send a point of contact for the response."),
    ("Marketing Operations Manager", "Lumina Skincare", 140, "CA", "linkedin_ad",
     "Saw your ad about campaign reporting. We run Meta, Google and TikTok and build weekly "
     "reports by hand in Sheets. How long does setup usually take?"),
    ("CFO", "Harrow & Vale Insurance", 950, "GB", "partner_referral",
     "Referred by Dataforge, our implementation partner. We need board-level financial "
     "dashboards with an audit trail. Budget is approved for 2027."),
    ("MSc Student", "University of Tartu", 3600, "EE", "organic_search",
     "Hi, I'm writing my thesis on BI adoption in SMEs. Could I get an extended trial or an "
     "academic license?"),
    ("Senior Software Engineer", "Quantix Robotics", 260, "US", "docs",
     "Looking at your API for embedding charts in our customer portal. Is embedded analytics "
     "priced separately? We need white-labeling."),
    ("Director of Customer Success", "Parcelwise", 510, "NL", "webinar",
     "Attended the churn-signals webinar. We'd like to see how health scores could work with our "
     "Zendesk and Salesforce data."),
    ("COO", "Sahel Agritech", 85, "NG", "website_demo_request",
     "We track yields and input costs across 1,200 smallholder farms. We need offline-friendly "
     "mobile reporting. Do you offer NGO or impact pricing?"),
    ("Analytics Lead", "Kumo Games", 330, "JP", "conference",
     "Met your team at the Tokyo SaaS summit. Interested in real-time player metrics dashboards; "
     "our data is in BigQuery."),
    ("IT Director", "Brandt Maschinenbau", 2600, "DE", "outbound_reply",
     "Thanks for your email. We may be interested next year. Please send pricing for roughly 150 "
     "users and information about on-premise options."),
    ("Owner", "Corner Bakery Co", 12, "AU", "trial_signup",
     "Started the trial. I want to see daily sales from Square for both shops in one place."),
    ("Head of RevOps", "Stackwise", 220, "US", "g2",
     "We're on a competitor and the contract ends in February. Main pain is slow dashboards and "
     "paying full seats for viewers. Do you charge for view-only users?"),
    ("Chief Digital Officer", "Alvorada Seguros", 4100, "BR", "partner_referral",
     "Looking for an enterprise analytics platform with Portuguese localisation and LGPD "
     "compliance. 600+ users across four business units."),
    ("Product Manager", "Feldspar Health", 75, "US", "product_hunt",
     "Neat launch! Is a HIPAA BAA available on the Business plan?"),
    ("Business Analyst", "Nordhavn Energi", 640, "DK", "organic_search",
     "We need to consolidate reporting from SAP and a few Excel files. Is there an SAP connector?"),
    ("Head of Competitive Intelligence", "Lookwise Analytics", 300, "US", "website_demo_request",
     "Please send a full feature list and pricing sheet for the enterprise tier. Also interested "
     "in your product roadmap for 2027."),
    ("Operations Manager", "Kiwi Freightways", 190, "NZ", "linkedin_ad",
     "Need fleet utilisation dashboards. We use Samsara and Xero."),
    ("VP Engineering", "Ledgerline", 1100, "SG", "website_demo_request",
     "We want to replace our internal Grafana-based business dashboards. Key needs: Okta SSO, "
     "SCIM, audit logs and an API. We'd like to run a POC in January."),
    ("Intern", "Mapleview Realty", 45, "CA", "organic_search",
     "my manager asked me to find a dashboard tool, what does it cost"),
    ("Head of Finance", "Ostara Foods", 380, "IE", "webinar",
     "Interested in the cash-flow forecasting template shown in the webinar. Do you integrate "
     "with NetSuite?"),
    ("CTO", "Pixelhaus", 28, "DE", "trial_signup",
     "Trial user, hitting the 3-dashboard limit on the free plan. What's the difference between "
     "Team and Business apart from SSO?"),
    ("Director of IT", "St. Brendan's Hospital Group", 5200, "IE", "rfp_portal",
     "Tender HSE-2026-114 has been published, deadline 12 December. Please register interest via "
     "the procurement portal."),
    ("Growth Marketer", "Looply", 18, "IN", "affiliate",
     "Can I get a discount code? Saw one mentioned in a YouTube review."),
]


def company_domain(company):
    base = "".join(c for c in ascii_fold(company).lower() if c.isalnum())
    return base[:18] + ".com"


def gen_leads():
    out = []
    for title, company, employees, country, source, message in LEADS:
        t = time_in(BUSINESS_HOURS)
        first, last = person(country)
        if employees < 15 or title in ("Intern", "MSc Student"):
            mail = f"{slug(first)}.{slug(last)}{rng.randrange(1, 99)}@gmail.com"
        else:
            mail = email_for(first, last, company_domain(company))
        out.append((t, {
            "lead_id": None,
            "created_at": iso(t),
            "name": f"{first} {last}",
            "email": mail,
            "title": title,
            "company": company,
            "employees": employees,
            "country": COUNTRY_NAME[country],
            "source": source,
            "message": message,
        }))
    out.sort(key=lambda x: x[0])
    events = []
    for n, (t, p) in enumerate(out):
        p["lead_id"] = f"LD-{58120 + n * 3 + rng.randrange(3)}"
        events.append((t, "lead.created", "lead-" + p["lead_id"][3:], p))
    return events


# ── payments ───────────────────────────────────────────────────────────────────────────────────

MERCHANT = ["software_subscription"] * 8 + ["professional_services", "training"]


def invoice(amount, currency, issued_day, inv_id=None):
    issued = datetime(2026, 11, 1) + timedelta(days=issued_day)
    due = issued + timedelta(days=30)
    return {
        "invoice_id": inv_id or f"INV-2026-{rng.randrange(10000, 99999):05d}",
        "amount": amount,
        "currency": currency,
        "issued": issued.strftime("%Y-%m-%d"),
        "due": due.strftime("%Y-%m-%d"),
    }


def base_amount_usd(c, category):
    if category == "training":
        return 450.0 * rng.choice([1, 2, 3, 4])
    if category == "professional_services":
        return rng.choice([2500.0, 4800.0, 7500.0, 12000.0])
    seats = max(1, c.seats + rng.randrange(-2, 3))
    monthly = seats * SEAT_PRICE_USD[c.plan]
    if rng.random() < 0.25:  # annual prepay with 15% discount
        return monthly * 12 * 0.85
    return monthly


def normal_payment(t):
    c = rng.choice(PAYING)
    category = rng.choice(MERCHANT)
    cur = c.currency
    amount = local_amount(base_amount_usd(c, category), cur)
    other = lambda: invoice(local_amount(base_amount_usd(c, "software_subscription"), cur), cur,
                            rng.randrange(-40, 20))
    kind = rng.choices(["exact", "partial", "none"], weights=[55, 27, 18])[0]
    invoices, reference = [], ""
    if kind == "exact":
        target = invoice(amount, cur, rng.randrange(-30, 10))
        invoices = [target] + [other() for _ in range(rng.choice([0, 0, 1, 2]))]
        reference = rng.choice([
            target["invoice_id"], target["invoice_id"], target["invoice_id"].replace("-", " "),
            "Brightlane subscription", f"{target['invoice_id']} {c.company}".strip(),
            "Renewal", "Invoice " + target["invoice_id"][-5:],
        ])
    elif kind == "partial":
        how = rng.choice(["fee", "half", "two", "stale"])
        if how == "fee":  # short by a bank or FX fee
            fee = rng.choice([7.5, 15, 20, 25]) if cur not in ("JPY",) else 2500
            target = invoice(money(amount + fee), cur, rng.randrange(-30, 5))
            invoices = [target]
            reference = target["invoice_id"]
        elif how == "half":  # a part payment
            target = invoice(money(amount * 2), cur, rng.randrange(-45, 0))
            invoices = [target, other()]
            reference = rng.choice([f"Part payment {target['invoice_id']}", "1st instalment",
                                    target["invoice_id"]])
        elif how == "two":  # one payment for two invoices
            a = local_amount(base_amount_usd(c, "software_subscription"), cur)
            b = money(amount - a) if amount > a else local_amount(a * 0.5, cur)
            amount = money(a + b)
            i1, i2 = invoice(a, cur, -30), invoice(b, cur, 0)
            invoices = [i1, i2]
            reference = rng.choice([f"{i1['invoice_id']}, {i2['invoice_id']}",
                                    f"{i1['invoice_id'][-5:]} + {i2['invoice_id'][-5:]}",
                                    "Oct + Nov invoices"])
        else:  # right invoice, amount changed after a seat change
            target = invoice(money(amount * rng.choice([0.9, 1.12, 1.25])), cur, -5)
            invoices = [target, other()] if rng.random() < 0.5 else [target]
            reference = target["invoice_id"]
    else:
        invoices = rng.choice([[], [], [other()], [other(), other()]])
        reference = rng.choice(["", "Brightlane", "top-up", "PO 4500188231", "card payment",
                                "INV-2025-" + str(rng.randrange(10000, 99999))])
    card = c.country
    ip = c.country if rng.random() < 0.9 else rng.choice(["US", "IE", "NL", "DE"])  # travel/VPN
    return {
        "payment_id": "pay_" + token(14),
        "created_at": iso(t),
        "amount": amount,
        "currency": cur,
        "customer_id": c.customer_id,
        "card_country": card,
        "ip_country": ip,
        "billing_country": c.country,
        "attempts_last_hour": rng.choices([1, 2, 3], weights=[88, 9, 3])[0],
        "merchant_category": category,
        "reference": reference,
        "open_invoices": invoices,
    }


def gen_payments():
    events = []
    for _ in range(78):
        t = time_in(ALL_DAY)
        p = normal_payment(t)
        events.append((t, "payment.created", p["payment_id"], p))
    # Card testing on a brand-new account: tiny amounts, climbing attempts, rotating cards.
    new_customer = "cus_" + token(12)
    t = at(3, 41, 7)
    for i, (amt, card) in enumerate([(1, "US"), (1, "BR"), (5, "US"), (2, "ID"), (5, "TR"), (1, "US")]):
        t += rng.randrange(40, 140)
        p = {
            "payment_id": "pay_" + token(14), "created_at": iso(t), "amount": amt,
            "currency": "USD", "customer_id": new_customer, "card_country": card,
            "ip_country": "VN", "billing_country": "US", "attempts_last_hour": 6 + i * 2,
            "merchant_category": "software_subscription", "reference": "", "open_invoices": [],
        }
        events.append((t, "payment.created", p["payment_id"], p))
    # Big first purchases where nothing lines up.
    odd = [
        (at(1, 12, 44), 9850, "USD", "GB", "RU", "US", 3, "professional_services", ""),
        (at(11, 27, 5), 4188, "EUR", "NG", "NL", "DE", 4, "software_subscription", "Business annual"),
        (at(19, 3, 52), 2699.97, "USD", "US", "CN", "CA", 5, "training", "training x6"),
        (at(22, 48, 30), 14400, "GBP", "AE", "GB", "GB", 2, "software_subscription",
         "INV-2026-31877"),
        (at(16, 15, 9), 760, "USD", "MX", "US", "US", 7, "software_subscription", ""),
        (at(6, 34, 21), 1200, "AUD", "AU", "AU", "AU", 9, "software_subscription", "upgrade"),
    ]
    for t, amt, cur, card, ip, bill, att, cat, ref in odd:
        p = {
            "payment_id": "pay_" + token(14), "created_at": iso(t), "amount": amt,
            "currency": cur, "customer_id": "cus_" + token(12), "card_country": card,
            "ip_country": ip, "billing_country": bill, "attempts_last_hour": att,
            "merchant_category": cat, "reference": ref,
            "open_invoices": ([invoice(14400, "GBP", -12, "INV-2026-31877")]
                              if ref == "INV-2026-31877" else []),
        }
        events.append((t, "payment.created", p["payment_id"], p))
    return events


# ── ad spend ───────────────────────────────────────────────────────────────────────────────────

# (campaign_id, channel, daily budget, pace (share of budget spent by midnight), cost per
#  click, conversion rate, hourly shape, sampling interval in minutes)
US_SHAPE = [3, 2, 1, 1, 1, 1, 1, 2, 2, 3, 4, 5, 6, 8, 9, 10, 10, 10, 9, 8, 7, 6, 5, 4]
EU_SHAPE = [1, 1, 1, 1, 2, 3, 6, 9, 10, 10, 10, 9, 9, 9, 8, 8, 7, 6, 5, 4, 3, 2, 1, 1]
GLOBAL_SHAPE = [4, 4, 4, 4, 5, 5, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 5, 5, 4]
SURGE_SHAPE = [1, 1, 1, 1, 1, 1, 2, 3, 4, 6, 10, 16, 18, 16, 12, 6, 4, 3, 2, 2, 1, 1, 1, 1]

CAMPAIGNS = [
    ("cmp-brand-search-us", "google_ads", 800, 0.93, 1.85, 0.062, US_SHAPE, 120),
    ("cmp-generic-search-emea", "google_ads", 600, 0.97, 6.40, 0.021, EU_SHAPE, 120),
    ("cmp-abm-enterprise-li", "linkedin", 1200, 1.58, 11.20, 0.012, GLOBAL_SHAPE, 144),
    ("cmp-retargeting-meta", "meta", 300, 0.81, 0.92, 0.018, GLOBAL_SHAPE, 144),
    ("cmp-awareness-youtube", "youtube", 500, 0.88, 0.38, 0.002, US_SHAPE, 180),
    ("cmp-competitor-bing", "microsoft_ads", 250, 1.42, 4.60, 0.028, SURGE_SHAPE, 180),
]


def gen_adspend():
    events = []
    for cid, channel, budget, pace, cpc, cvr, shape, every in CAMPAIGNS:
        weights = [w * rng.uniform(0.8, 1.2) for w in shape]
        total = sum(weights)
        per_hour = [budget * pace * w / total for w in weights]

        def spent_by(sec):
            h, frac = divmod(sec / 3600.0, 1)
            h = int(h)
            return sum(per_hour[:h]) + (per_hour[h] * frac if h < 24 else 0)

        t = rng.randrange(5 * 60, every * 60) + rng.randrange(60)
        while t < 24 * 3600:
            today = spent_by(t)
            last_hour = today - spent_by(max(0, t - 3600))
            clicks = max(0, round(last_hour / cpc * rng.uniform(0.85, 1.15)))
            conv = sum(1 for _ in range(clicks) if rng.random() < cvr)
            p = {
                "campaign_id": cid,
                "channel": channel,
                "sampled_at": iso(t),
                "daily_budget": budget,
                "spend_today": money(today),
                "spend_last_hour": money(last_hour),
                "clicks_last_hour": clicks,
                "conversions_last_hour": conv,
                "currency": "USD",
            }
            events.append((t, "adspend.sample", f"ads-{cid}-{iso(t)[11:16].replace(':', '')}", p))
            t += every * 60 + rng.randrange(-90, 90)
    return events


# ── social mentions ────────────────────────────────────────────────────────────────────────────

# (network, author, followers, text, fixed time or None)
SOCIAL = [
    ("x", "dataduck_dev", 1840,
     "@brightlaneHQ dashboards have been loading for 3 minutes straight. Paying for the Business "
     "plan btw. Is something down?? status page says green 🙃", at(14, 26, 13)),
    ("x", "mkowalczyk", 312,
     "Third time this month the @brightlaneHQ Salesforce sync just silently stopped. No alert, no "
     "email. Found out when the CEO asked why pipeline was flat.", None),
    ("linkedin", "Rachel Torres", 2210,
     "Honest feedback for Brightlane: the product is great, but getting one invoice corrected "
     "took three weeks and six emails. Finance teams talk to each other, folks.", None),
    ("reddit", "throwaway_bi_guy", 41,
     "Anyone else's Brightlane CSV exports timing out on big tables? Support said 'use smaller "
     "date ranges' which... is not a fix.", None),
    ("x", "sam_builds", 9800,
     "price went from $12 to $15/seat at renewal with 2 weeks notice. @brightlaneHQ I like you "
     "but that's not how you treat customers", None),
    ("bluesky", "lenafischer.bsky.social", 530,
     "The new Brightlane editor moved the filter panel AGAIN. Muscle memory destroyed for the "
     "second time this year.", None),
    ("threads", "ops.with.oli", 1204,
     "Android app crashing on SSO login for our whole team. iOS is fine. @brightlanehq any ETA?",
     None),
    ("mastodon", "fjonsson@mastodon.social", 140,
     "Brightlane has emailed me 'we miss you' four times this week since I cancelled. Please "
     "respect the unsubscribe.", None),
    ("x", "annalytics", 15300,
     "Built our entire board deck in @brightlaneHQ this quarter. Numbers update themselves, "
     "nobody is copy-pasting from Sheets at midnight anymore. 10/10", None),
    ("linkedin", "Marcus Bennett", 4870,
     "Shoutout to the Brightlane support team: we had a SAML lockout at 8am, and a real human "
     "fixed it in 20 minutes. That's rare in B2B software.", at(9, 41, 30)),
    ("x", "priya_ops", 760,
     "the new scheduled exports in brightlane are chef's kiss. one less cron job to babysit",
     None),
    ("mastodon", "tobias@hachyderm.io", 890,
     "Pleasantly surprised by Brightlane's API docs. Clear examples, real error codes, pagination "
     "that makes sense. More of this, please.", None),
    ("reddit", "sql_gremlin", 2203,
     "We moved from Tableau to Brightlane last year for a 40-person team. Cheaper, and the "
     "business folks actually build their own reports now. Not perfect (PDF export is meh) but "
     "overall a win.", None),
    ("linkedin", "Ngozi Adeyemi", 1390,
     "Our team presented our first fully automated KPI dashboard today, built on Brightlane in "
     "two weeks. Proud of this crew!", None),
    ("x", "jkim_data", 3120,
     "ok @brightlaneHQ's row-level security setup took me 15 minutes. the last tool took a "
     "consultant and 3 weeks", None),
    ("x", "founder_fran", 2540,
     "@brightlaneHQ does the Team plan include SSO or is that Business only? trying to figure out "
     "if we need to upgrade", None),
    ("linkedin", "David Osei", 640,
     "Anyone using Brightlane with NetSuite? Looking for real-world experiences before we commit.",
     None),
    ("reddit", "analytics_anon", 88,
     "Brightlane vs Metabase for a 15-person startup? We have Postgres and Stripe data and not "
     "much budget.", None),
    ("x", "wei_chen_bi", 430,
     "@brightlaneHQ is there a way to set a custom fiscal year? our FY starts in April and every "
     "YTD filter is wrong", None),
    ("bluesky", "nora-codes.bsky.social", 2790,
     "does @brightlane.io have a Terraform provider? want to manage dashboards as code", None),
    ("x", "hr_tech_hannah", 980,
     "Is brightlane GDPR compliant? Where is EU data stored? Asking for our DPO 😅", None),
    ("x", "sipho_analytics", 670,
     "@brightlaneHQ any plans for a Microsoft Teams integration? Slack-only alerts are a blocker "
     "for us", None),
    ("x", "crypto_gains_4u", 12,
     "@brightlaneHQ 🚀🚀 Earn 500% returns with our AI trading bot!! DM for whitelist spot 💰💰 "
     "#crypto #passiveincome", None),
    ("x", "growthhackz_agency", 230,
     "@brightlaneHQ Want 10K real followers in 7 days? Best price guaranteed. Check the link in "
     "bio", None),
    ("threads", "luxury_watch_deals_", 51,
     "Replica watches best quality @brightlanehq check our store link in bio", None),
    ("linkedin", "Sophie Laurent", 8400,
     "We're hiring a Senior Analytics Engineer in Lyon. Stack is dbt, Snowflake and Brightlane. "
     "DM me if you're interested!", None),
    ("x", "bi_weekly_digest", 22100,
     "Brightlane ships natural-language queries for dashboards. Early users report good results "
     "on single tables, mixed accuracy on complex joins.", None),
    ("reddit", "midwest_cfo", 312,
     "PSA for Brightlane users: right-click a chart > 'Explain this change' and it actually tells "
     "you which segment moved. Took me a year to notice.", None),
    ("x", "gregthedev", 150,
     "The brightlane status page says 'degraded performance' but the entire API is returning "
     "503s for us. That's not degraded, that's down.", at(14, 41, 2)),
    ("x", "ayanna_ops", 2210,
     "@brightlaneHQ webhooks delayed ~45 min for us right now, orders piling up. Please update "
     "your status page", at(14, 47, 55)),
]

NETWORK_URL = {
    "x": "https://x.com/{a}/status/{n}",
    "linkedin": "https://www.linkedin.com/feed/update/urn:li:activity:{n}",
    "reddit": "https://www.reddit.com/r/BusinessIntelligence/comments/{s}/",
    "bluesky": "https://bsky.app/profile/{a}/post/{s}",
    "threads": "https://www.threads.net/@{a}/post/{s}",
    "mastodon": "https://{h}/@{u}/{n}",
}


def gen_social():
    events = []
    for i, (network, author, followers, text, fixed) in enumerate(SOCIAL):
        t = fixed if fixed is not None else time_in(SOCIAL_HOURS)
        n = str(1860000000000000000 + rng.randrange(10 ** 15, 10 ** 16))
        s = token(7).lower()
        user, _, host = author.partition("@")
        url = NETWORK_URL[network].format(a=author, n=n[:19], s=s, u=user, h=host)
        mention_id = f"sm-{network}-{n[-10:]}"
        events.append((t, "social.mention", mention_id, {
            "mention_id": mention_id,
            "posted_at": iso(t),
            "network": network,
            "author": author,
            "followers": followers,
            "text": text,
            "url": url,
        }))
    return events


# ── content ────────────────────────────────────────────────────────────────────────────────────

# (time, kind, title, author, url, text)
CONTENT = [
    (at(7, 0), "blog post", "A practical guide to metric definitions your CFO will sign off on",
     "Nora Bakker", "https://brightlane.io/blog/metric-definitions",
     "Every analytics team eventually has the meeting: two dashboards show two different revenue "
     "numbers, and the CFO wants to know which one is right. The honest answer is usually "
     "'both, depending on what you mean by revenue'.\n\n"
     "The fix isn't a better tool. It's a written definition for every metric that matters, "
     "agreed before anyone builds a chart. A good definition answers five questions. What exactly "
     "is counted: revenue recognised or invoiced, including refunds, including tax? When is it "
     "counted: booking date, invoice date or cash date, and in which timezone? What is excluded: "
     "internal accounts, test transactions, intercompany sales? Who owns it: one person who "
     "approves changes, usually in finance. Where does it come from: the system of record, not a "
     "copy of a copy.\n\n"
     "Write these down in plain language, put them where everyone can find them, and link every "
     "dashboard tile to its definition. In Brightlane, the metric layer stores the definition next "
     "to the calculation, so the text and the SQL can't drift apart.\n\n"
     "Start with ten metrics, not a hundred. Revenue, gross margin, customers, churn and pipeline "
     "cover most board conversations. Get those right and the rest tend to follow."),
    (at(8, 0), "blog post", "Five dashboards every RevOps team should build first",
     "Maya Lindqvist", "https://brightlane.io/blog/five-revops-dashboards",
     "Most RevOps teams we talk to don't have a dashboard problem; they have a too-many-dashboards "
     "problem. Forty tabs, three definitions of pipeline, and nobody sure which number the CEO "
     "saw last. If you're starting fresh, or starting over, these are the five we'd build first.\n\n"
     "Pipeline coverage by quarter: open pipeline divided by remaining quota, split by segment. "
     "Anything under 3x deserves a conversation on Monday, not at the end of the quarter.\n\n"
     "Stage conversion and velocity: how many deals move from each stage to the next, and how "
     "long they sit there. This is where forecasting problems show up weeks early.\n\n"
     "Win/loss by source: inbound, outbound, partner. It settles a surprising number of budget "
     "arguments.\n\n"
     "Rep activity against outcomes: not to micromanage, but to spot who needs help before the "
     "number is missed.\n\n"
     "Renewals due in the next 120 days, with a health score: the cheapest revenue is the revenue "
     "you already have.\n\n"
     "Keep each one to a single screen, agree on the definitions in writing, and retire any "
     "dashboard nobody has opened in 60 days. Your future self will thank you."),
    (at(9, 0), "changelog",
     "November release: scheduled exports to S3, faster PDFs, fiscal calendars in beta",
     "Brightlane Product Team", "https://brightlane.io/changelog/2026-11",
     "Here's what shipped this month.\n\n"
     "Scheduled exports to S3 and GCS. Any report can now be delivered as CSV or Parquet to a "
     "bucket you own, on any schedule. Credentials are stored encrypted and can be scoped to a "
     "single prefix. This was the most requested item on our public roadmap.\n\n"
     "Faster PDF rendering. Dashboards with more than 20 widgets now export up to four times "
     "faster, and number formats in PDFs finally match what you see on screen: no more '$1,240K' "
     "when you asked for two decimals.\n\n"
     "Custom fiscal calendars (beta). Set the first month of your fiscal year in workspace "
     "settings, and 'this quarter' and 'year to date' follow it everywhere. Business and "
     "Enterprise workspaces can opt in under Settings > Labs.\n\n"
     "Fixes. Viewers can no longer rearrange widgets on shared dashboards. Salesforce field "
     "mappings pick up renamed custom fields without a reconnect. Accent-insensitive search is "
     "on for all workspaces, so 'Muller' finds 'Müller'.\n\n"
     "As always, reply to this post or open a ticket if something doesn't behave the way you "
     "expect."),
    (at(9, 30), "case study", "Juniper Education: one source of truth for 42 schools",
     "Tom Hughes", "https://brightlane.io/customers/juniper-education",
     "Juniper Education runs 42 charter schools across three states, serving about 19,000 "
     "students. Each school had its own way of tracking attendance, assessment results and "
     "staffing, and the central office spent most of its analyst time reconciling spreadsheets "
     "instead of looking at trends.\n\n"
     "The goal for the first phase was deliberately narrow: one attendance dashboard every "
     "principal would trust. Juniper's two-person data team connected Brightlane to the student "
     "information system and the HR platform, agreed on a single definition of chronic absence "
     "with the principals, and used row-level security so that each principal sees their own "
     "school and regional directors see their region.\n\n"
     "Within a term, principals were checking the dashboard weekly without being asked. Chronic "
     "absence fell from 17% to 13% at the schools that adopted an early-outreach routine built "
     "around the dashboard's 'students at risk this week' list.\n\n"
     "Phase two, now under way, adds assessment data and staffing vacancies. 'We didn't need more "
     "data,' says Marcus Reed, Juniper's director of analytics. 'We needed the same data, defined "
     "once, in front of the people who can act on it.'"),
    (at(10, 0), "case study", "How Kestrel Freight cut month-end reporting from five days to one",
     "Tom Hughes", "https://brightlane.io/customers/kestrel-freight",
     "Kestrel Freight moves around 9,000 pallets a week between its depots in Felixstowe, "
     "Daventry and Glasgow. Until last spring, its finance team spent the first five working days "
     "of every month assembling a management pack from the transport management system, Xero and "
     "a dozen spreadsheets kept by depot managers.\n\n"
     "'Everyone had their own version of cost per pallet,' says Priya Nair, Kestrel's head of "
     "financial planning. 'We'd spend the first board meeting of the month arguing about the "
     "numbers instead of what to do about them.'\n\n"
     "The team connected Brightlane to the TMS database and Xero in a week, then spent a month "
     "agreeing twelve core metric definitions with the depot managers. Those definitions now live "
     "in one place, and every dashboard uses them.\n\n"
     "The result: month-end reporting takes one day instead of five, depot managers see "
     "yesterday's margin every morning, and the board pack is generated automatically on the "
     "second working day. Next is driver-level utilisation, which Kestrel plans to roll out in "
     "the first quarter of 2027.\n\n"
     "'The tool mattered,' Nair says, 'but the real win was being forced to agree on what the "
     "numbers mean.'"),
    (at(11, 30), "LinkedIn post", "We're hiring: Senior Support Engineer, EMEA", "Brightlane",
     "https://www.linkedin.com/feed/update/urn:li:activity:7399218840215553024",
     "We're hiring a Senior Support Engineer for our EMEA team (remote, or hybrid from Dublin or "
     "Berlin).\n\n"
     "You'll be the person our customers reach when something is really broken: SAML handshakes "
     "that fail for reasons nobody can see, Salesforce syncs that stop at 6am, API integrations "
     "that behave differently at scale. You'll read logs, reproduce issues, write clear "
     "explanations for customers, and work directly with our engineers to get fixes shipped.\n\n"
     "What we're looking for: three or more years in a technical support or solutions role at a "
     "B2B SaaS company, comfort with SQL and HTTP APIs, and the patience to explain a certificate "
     "rotation to someone who is having a very bad morning. German or French is a plus.\n\n"
     "What you'll get: a team that measures itself on resolution quality rather than ticket "
     "counts, a real on-call rotation with compensation, and a learning budget of €2,000 a "
     "year.\n\n"
     "Link to the role in the comments. Referrals very welcome: if you know someone great, tag "
     "them below."),
    (at(12, 0), "blog post", "Custom fiscal years, finally", "Lucas Moreau",
     "https://brightlane.io/blog/custom-fiscal-years",
     "If your fiscal year starts in February, April or July, you've probably been fighting "
     "Brightlane's date filters for a while. 'This quarter' meant the calendar quarter, 'year to "
     "date' meant since January 1, and every finance dashboard needed a pile of custom date "
     "ranges that someone had to update by hand.\n\n"
     "That ends this month. With custom fiscal calendars, now in beta, you set the first month of "
     "your fiscal year once, in workspace settings. From then on every relative date filter, "
     "every quarter grouping and every period-over-period comparison follows your fiscal "
     "calendar. Reports show FY27 Q2 instead of 2026 Q3, and exports include both the fiscal and "
     "the calendar period so your spreadsheets don't break.\n\n"
     "We also handled the awkward cases: 4-4-5 and 5-4-4 retail calendars, 53-week years, and "
     "workspaces that need both calendars side by side, for example a finance team reporting on "
     "the fiscal year and a sales team paid on calendar quarters.\n\n"
     "The beta is open to Business and Enterprise workspaces under Settings > Labs, and we expect "
     "general availability in December. If you try it, we'd like to hear where it falls short, "
     "especially from retailers who live on a 4-4-5 calendar."),
    (at(13, 0), "blog post", "Row-level security without the headache", "Arjun Iyer",
     "https://brightlane.io/blog/row-level-security",
     "Row-level security sounds simple: regional managers should only see their region. In "
     "practice it's where a lot of BI rollouts quietly stall, because the obvious solutions don't "
     "scale. Copying a dashboard per region works for three regions and becomes a maintenance "
     "nightmare at eight. Filtering in the dashboard itself is one URL edit away from a data "
     "leak.\n\n"
     "The approach we recommend is to keep one dashboard and move the rule into the data model. "
     "In Brightlane you define a policy once, for example 'deals.region must equal "
     "user.attributes.region', and every query against that table is rewritten to include it, "
     "whether it comes from a dashboard, a CSV export or the API.\n\n"
     "A few tips from rollouts we've seen go well. Store the attribute in your identity provider, "
     "not by hand: if region comes through SAML or SCIM, new managers get the right access on day "
     "one and leavers lose it automatically. Test with 'view as': before sharing a dashboard, "
     "open it as a user from each group and check that the totals add up. Plan for exceptions: "
     "finance and leadership usually need everything, so give them a role that bypasses the "
     "policy explicitly rather than a second set of dashboards.\n\n"
     "Done this way, adding a ninth region is a change in your IdP, not a weekend of copy and "
     "paste."),
    (at(14, 0), "blog post", "What we learned running our own support on Brightlane",
     "Elif Kaya", "https://brightlane.io/blog/support-on-brightlane",
     "Our support team handles around 1,500 tickets a day across email, chat and shared Slack "
     "channels. For a long time the only reporting we had came out of the helpdesk: tickets "
     "created, tickets solved, average first response. Useful, but it told us nothing about why "
     "customers were writing in.\n\n"
     "A year ago we started feeding ticket data into Brightlane alongside product usage and "
     "billing data. Three things changed.\n\n"
     "We stopped counting and started grouping. Once every ticket carried a category and the "
     "customer's plan, it was obvious that a fifth of Business-plan tickets were about SSO and "
     "SCIM. That became a documentation project and then a product project, and SSO tickets are "
     "down by half.\n\n"
     "We learned that fast isn't always good. Our fastest first responses were on the tickets "
     "that later reopened most. We now track reopen rate next to response time, and reward "
     "resolution, not speed.\n\n"
     "We shared the dashboards with engineering. A live view of bugs by component, with the "
     "customers affected, turns out to be more persuasive than any escalation email.\n\n"
     "None of this needed a big data team: one analyst, two weeks, and a willingness to change "
     "what we measure."),
    (at(15, 0), "newsletter", "The Brightlane Brief: November 2026", "Grace Campbell",
     "https://brightlane.io/newsletter/2026-11",
     "Hi there,\n\nThree things worth your time this month.\n\n"
     "First, scheduled exports to S3 and GCS are live. If someone on your team downloads the same "
     "CSV every morning, this is for you. Set it up once under Report > Schedule > "
     "Destination.\n\n"
     "Second, our webinar on churn signals drew more than 900 people, the biggest we've run. The "
     "recording and the health-score template we built live are on the resources page. The short "
     "version: product usage predicts churn far better than support ticket volume, and a drop in "
     "the number of active viewers is the earliest warning we've found.\n\n"
     "Third, a heads-up for teams in the US: dashboard traffic roughly doubles in Thanksgiving "
     "week as retail and logistics customers watch their numbers hourly. If that's you, consider "
     "raising refresh intervals on heavy dashboards and moving non-urgent scheduled reports to "
     "the weekend.\n\n"
     "Coming in December: custom fiscal calendars leave beta, and the Microsoft Teams "
     "integration many of you have asked for enters early access. Reply to this email if you'd "
     "like to be on the list.\n\nUntil next month,\nGrace and the Brightlane team"),
    (at(16, 10), "help article", "Rotating your SAML signing certificate without locking users out",
     "Brightlane Support", "https://brightlane.io/help/sso/rotate-saml-certificate",
     "Identity providers such as Microsoft Entra ID, Okta and Google Workspace rotate SAML "
     "signing certificates periodically. If Brightlane only knows the old certificate, every "
     "login fails with 'SAML response signature invalid' the moment the new one becomes "
     "active.\n\n"
     "To rotate without downtime: first, create the new certificate in your identity provider "
     "but don't activate it yet. Second, in Brightlane go to Settings > Security > Single sign-on, "
     "click 'Add secondary certificate' and upload the new certificate; Brightlane now accepts "
     "responses signed with either one. Third, activate the new certificate in your identity "
     "provider and test a login in a private browser window. Finally, once logins work, return to "
     "Brightlane and remove the old certificate.\n\n"
     "If users are already locked out, an owner or admin with a password login can sign in at "
     "brightlane.io/login?sso=false and add the secondary certificate. If no such account "
     "exists, contact support from the owner's email address; we can temporarily enable password "
     "login after verifying your identity.\n\n"
     "We recommend keeping at least one break-glass admin account with a strong password and "
     "hardware-key two-factor authentication for exactly this situation."),
    (at(17, 0), "LinkedIn post",
     "Thanksgiving week: why your ops dashboards need a different refresh rate", "Maya Lindqvist",
     "https://www.linkedin.com/feed/update/urn:li:activity:7399301175538802688",
     "It's Thanksgiving week in the US, which means retail and logistics teams are about to stare "
     "at their dashboards harder than at any other time of year. A few things we've learned from "
     "customers who've been through it.\n\n"
     "Refresh what matters, not everything. Orders per hour and fulfilment backlog deserve a "
     "five-minute refresh on Friday. Last quarter's cohort analysis does not. Every unnecessary "
     "refresh competes with the ones that matter.\n\n"
     "Set alert thresholds for the week, not the year. A 40% jump in orders is an anomaly in "
     "October and an ordinary Tuesday in late November. Raise thresholds temporarily, or you'll "
     "train people to ignore alerts exactly when they count.\n\n"
     "Agree on who watches what. The worst outcome is ten people watching the same chart and "
     "nobody watching returns or payment failures.\n\n"
     "And take a screenshot of the baseline on Wednesday night. On Monday someone will ask "
     "whether that was normal.\n\n"
     "Good luck to everyone running the numbers this weekend. 📦"),
    (at(18, 0), "X thread", "Five things to check on your dashboards before Thanksgiving traffic",
     "brightlaneHQ", "https://x.com/brightlaneHQ/status/1861902281736192110",
     "1/ Heading into Thanksgiving and Black Friday? Five quick checks for your dashboards before "
     "the traffic hits. 🧵\n\n"
     "2/ Refresh intervals. Put live operational dashboards (orders, fulfilment, payments) on a "
     "short refresh and move everything else to hourly or daily. Your warehouse bill will thank "
     "you.\n\n"
     "3/ Alert thresholds. Normal this week looks nothing like normal in October. Raise the "
     "thresholds on volume alerts, or switch them to week-over-week comparisons.\n\n"
     "4/ Access. Temporary staff and agency partners often need read access this week. Use a "
     "time-limited share link instead of creating full accounts you'll forget to remove.\n\n"
     "5/ Scheduled reports. Pause the non-urgent ones until Monday so the reports people actually "
     "need arrive on time.\n\n"
     "6/ Bonus: write down Wednesday's baseline. Screenshot it, export it, whatever works. Future "
     "you will want to compare.\n\n"
     "Happy holidays to everyone on call this weekend."),
    (at(19, 30), "status update",
     "Incident report: elevated API errors and dashboard timeouts on November 25",
     "Brightlane Engineering", "https://status.brightlane.io/incidents/2026-11-25-api-errors",
     "Between 14:19 and 14:55 UTC on November 25, a large share of requests to the Brightlane API "
     "and web app failed with 502 and 503 errors, and webhook deliveries were delayed by up to 50 "
     "minutes. Scheduled reports and data syncs paused during the incident and resumed "
     "automatically afterwards. No data was lost.\n\n"
     "What happened: a routine configuration change to our connection pooler lowered the maximum "
     "number of connections to our primary database cluster in the US region. Under normal "
     "afternoon load, requests queued behind the pooler, timed out, and were retried by clients, "
     "which increased the load further.\n\n"
     "Why it took 36 minutes: our alerting fired within two minutes, but the change had shipped "
     "alongside an unrelated release, and we rolled back the wrong one first. Our status page was "
     "also updated later than it should have been. Several of you noticed before we said "
     "anything, and that's on us.\n\n"
     "What we're changing: configuration changes to the connection layer now deploy on their own "
     "and canary on 5% of traffic first, and the status page updates automatically when error "
     "rates cross a threshold.\n\n"
     "We're sorry for the disruption, especially to those of you whose order pipelines depend on "
     "our webhooks in the busiest week of the year."),
    (at(20, 0), "LinkedIn post", "A Thanksgiving note", "Hannah Okafor",
     "https://www.linkedin.com/feed/update/urn:li:activity:7399342920381612032",
     "Tomorrow most of our US team is off for Thanksgiving, so a quick note before the long "
     "weekend.\n\n"
     "This year Brightlane grew from 140 to 230 people, and from a few thousand customers to just "
     "over eleven thousand. Growth like that is mostly a story about other people: customers who "
     "trusted us with their numbers before we had every feature they needed, and a team that kept "
     "answering tickets at 7am when SAML certificates expired and syncs broke.\n\n"
     "Today we also had a rough afternoon. For about half an hour our API and dashboards failed "
     "for many of you, in the one week of the year when retail and logistics teams need them "
     "most. We've published a full incident report. I'm sorry, and I'm grateful to the customers "
     "who told us, politely and otherwise, before our status page did.\n\n"
     "To everyone working through the holiday, in warehouses, on support rotations, on call: "
     "thank you. To everyone else: close the laptop. The dashboards will still be there on "
     "Monday."),
]


def gen_content():
    events = []
    for t, kind, title, author, url, text in CONTENT:
        t += rng.randrange(0, 40)  # schedulers fire a few seconds late
        cid = "cnt-" + slug(title)[:48].rstrip("-")
        events.append((t, "content.published", cid, {
            "content_id": cid, "published_at": iso(t), "kind": kind, "title": title,
            "author": author, "url": url, "text": text,
        }))
    return events


# ── nightly reports ────────────────────────────────────────────────────────────────────────────

REPORTS = [
    ("Support", {
        "tickets_created": 1486, "tickets_solved": 1417, "backlog_open": 318,
        "median_first_response_minutes": 6.8, "p90_first_response_minutes": 41.0,
        "csat_percent": 91.2, "sla_breaches": 23, "reopened": 57, "escalated_to_engineering": 19,
    }, [
        "SAML certificate rotation at an enterprise customer locked out ~300 users for 45 minutes; "
        "resolved by adding a secondary certificate",
        "CSV export timeouts on reports over 90 days: 64 tickets this week, up from 22",
        "Two new agents started on the APAC shift; APAC median first response down from 19 to 11 "
        "minutes",
        "Ticket volume expected to rise ~30% over the Thanksgiving weekend from retail customers",
    ]),
    ("Sales", {
        "new_leads": 294, "sqls": 41, "meetings_booked": 37, "opportunities_created": 18,
        "pipeline_created_usd": 612400, "closed_won_usd": 188250, "closed_won_deals": 7,
        "closed_lost_deals": 5, "win_rate_percent": 58.3,
    }, [
        "Closed Harrow & Vale Insurance (950 seats), first deal sourced through the Dataforge "
        "partnership",
        "Two enterprise deals (Volta Mobility, Brandt Maschinenbau) slipped to December pending "
        "security review",
        "City of Eastbrook RFP requires StateRAMP; legal reviewing whether to bid",
        "Leads from G2 up 35% week over week after the November review campaign",
    ]),
    ("Marketing", {
        "ad_spend_usd": 4512.77, "ad_budget_usd": 3650.0, "clicks": 3921, "conversions": 96,
        "cost_per_conversion_usd": 47.01, "website_sessions": 28744, "demo_requests": 58,
        "newsletter_signups": 412,
    }, [
        "LinkedIn ABM campaign spent 152% of its daily budget; bid cap lowered at 17:40",
        "Microsoft Ads competitor campaign hit its budget by 15:20 in a bidding war on 'tableau "
        "alternative'",
        "Churn-signals webinar recording passed 2,000 views",
        "Black Friday email scheduled for Friday 14:00 UTC",
    ]),
    ("Finance", {
        "payments_received": 4963, "payments_value_usd": 1284310.55, "failed_payments": 212,
        "refunds": 14, "refunds_value_usd": 8420.0, "disputes_opened": 3,
        "unreconciled_payments": 57, "dso_days": 38.4,
    }, [
        "Three chargebacks opened, two from the same customer claiming charges after cancellation",
        "57 payments not matched automatically, mostly bank-fee shortfalls on EUR transfers",
        "Card-testing pattern blocked on a new account: 11 attempts of $1-5 within 20 minutes",
        "November close starts Monday; VAT reissue requests from German customers still pending",
    ]),
    ("Customer Success", {
        "accounts_at_risk": 36, "renewals_due_30d": 124, "renewals_value_30d_usd": 1870400,
        "qbrs_held": 9, "nps": 42, "expansion_usd": 64300, "churned_accounts": 4,
        "churned_mrr_usd": 6120, "health_score_avg": 71.5,
    }, [
        "Tidewater Foods flagged at risk: active viewers down 40% in 30 days",
        "Four accounts churned: three citing budget cuts, one moving to an in-house tool",
        "Juniper Education expanding to assessment data, +120 seats",
        "Harrow & Vale kickoff scheduled for December 2",
    ]),
    ("Platform Engineering", {
        "api_requests_millions": 412.6, "api_error_rate_percent": 0.08, "p95_latency_ms": 480,
        "p99_latency_ms": 1730, "deploys": 14, "rollbacks": 1, "incidents": 1,
        "webhook_deliveries_millions": 38.2, "webhook_p95_delay_seconds": 2.9,
        "uptime_percent": 99.97,
    }, [
        "Rolled back release 2026.11.24.3 after a memory regression in the PDF renderer",
        "Sev-3 09:12-09:31 UTC: Salesforce sync workers stalled on INVALID_FIELD errors from "
        "renamed custom fields",
        "Postgres primary in us-east at 71% CPU at peak; capacity review before Thanksgiving "
        "traffic",
        "Connection pooler change (lower max connections per node) queued for tomorrow's release",
    ]),
    ("Data", {
        "pipelines_run": 186, "pipelines_failed": 4, "rows_ingested_millions": 93.4,
        "freshness_sla_met_percent": 97.8, "crm_records_imported": 21340,
        "records_flagged_invalid": 1912, "duplicate_candidates": 1460,
        "warehouse_cost_usd": 1284.5,
    }, [
        "HubSpot nightly sync ran 40 minutes late after an API quota error",
        "Duplicate rate in imported CRM records rose to 6.8% after the trade-show uploads",
        "Finance revenue model migrated to the metric layer; two dashboards still on old "
        "definitions",
        "Warehouse cost up 12% week over week from 5-minute refreshes on retail dashboards",
    ]),
    ("Security", {
        "login_attempts": 184220, "failed_logins": 3911, "blocked_ips": 27,
        "mfa_enrollment_percent": 88.4, "open_vulns_high": 2, "open_vulns_critical": 0,
        "security_questionnaires_in_progress": 11, "phishing_reports": 6,
    }, [
        "Credential-stuffing burst against the login endpoint 02:10-02:40 UTC: 2,300 attempts from "
        "27 IPs, rate limits held",
        "SOC 2 Type II fieldwork starts December 1; evidence collection 80% complete",
        "Two high-severity dependency vulnerabilities patched in staging, production rollout "
        "tomorrow",
        "Cobalt Security requested our pen-test summary under NDA",
    ]),
    ("Product", {
        "weekly_active_users": 61240, "daily_active_users": 23105, "dashboards_created": 1480,
        "reports_scheduled": 612, "nl_queries": 8420, "nl_query_thumbs_down_percent": 18.5,
        "feature_requests_logged": 47,
    }, [
        "Natural-language query thumbs-down rate still 18.5%, mostly on multi-table joins",
        "Fiscal calendar beta enabled for 62 workspaces",
        "Microsoft Teams integration is the top feature request this month (31 requests)",
        "Design review of the filter panel after negative feedback on the November layout change",
    ]),
    ("People Ops", {
        "headcount": 231, "open_roles": 19, "offers_extended": 3, "offers_accepted": 2,
        "new_starters": 2, "leavers": 1, "interviews_held": 26, "time_to_hire_days": 34,
    }, [
        "Two new APAC support agents started",
        "Senior Support Engineer (EMEA) role approved, posting tomorrow",
        "US office closed Thursday and Friday for Thanksgiving",
        "Engagement survey closes Friday; participation at 74%",
    ]),
]


def gen_reports():
    events = []
    t = at(0, 5, 0)
    for team, metrics, notes in REPORTS:
        key = f"rpt-{slug(team)}-{REPORT_DATE}"
        events.append((t, "report.nightly", key, {
            "team": team, "date": REPORT_DATE, "generated_at": iso(t),
            "metrics": metrics, "notes": notes,
        }))
        t += rng.randrange(1, 4)
    return events


# ── CRM imports ────────────────────────────────────────────────────────────────────────────────

PROSPECTS = [
    ("Acme Logistics", "acmelogistics.com", "US"), ("Bluefin Analytics", "bluefin.io", "US"),
    ("Carver & Sons", "carverandsons.com", "US"), ("Delta Ridge Foods", "deltaridge.com", "US"),
    ("Evergreen Dental", "evergreendental.com", "US"), ("Foxglove Retail", "foxglove.co.uk", "GB"),
    ("Gable Homes", "gablehomes.co.uk", "GB"), ("Hartwell Insurance", "hartwell.ie", "IE"),
    ("Isar Medtech", "isar-medtech.de", "DE"), ("Jadeport Trading", "jadeport.sg", "SG"),
    ("Kranich Software", "kranich.de", "DE"), ("Lumiere Hotels", "lumierehotels.fr", "FR"),
    ("Montes Vinos", "montesvinos.es", "ES"), ("Noord Energie", "noordenergie.nl", "NL"),
    ("Orbit Telecom", "orbittelecom.com", "US"), ("Pacific Rim Freight", "pacrimfreight.com.au", "AU"),
    ("Quarry Lane Capital", "quarrylane.com", "US"), ("Rautio Oy", "rautio.fi", "FI"),
    ("Saffron Foods", "saffronfoods.in", "IN"), ("Trailhead Outdoor", "trailhead-outdoor.ca", "CA"),
    ("Umbra Security", "umbrasec.com", "US"), ("Vega Pharma", "vegapharma.it", "IT"),
    ("Westbrook University", "westbrook.edu", "US"), ("Yamato Components", "yamato-comp.co.jp", "JP"),
    ("Zuri Fintech", "zurifintech.co.za", "ZA"), ("Brightfield Media", "brightfieldmedia.com", "US"),
    ("Copper Kettle Brewing", "copperkettle.beer", "US"), ("Nordlys Shipping", "nordlys.no", "NO"),
    ("Piast Logistyka", "piast-logistyka.pl", "PL"), ("Sol Nascente Energia", "solnascente.com.br", "BR"),
]

TITLES = ["VP Sales", "Head of Operations", "Marketing Manager", "CFO", "Data Analyst",
          "Director of Finance", "IT Manager", "Operations Director", "CEO", "RevOps Manager",
          "Business Intelligence Lead", "Controller", "Sales Operations Analyst", "COO",
          "Head of Growth", "Procurement Manager"]

COUNTRY_VARIANTS = {
    "US": ["US", "USA", "United States", "U.S.", "united states", "US ", "America"],
    "GB": ["UK", "United Kingdom", "GB", "England", "Great Britain", "u.k."],
    "DE": ["Germany", "DE", "Deutschland", "germany", "GER"],
    "IE": ["Ireland", "IE", "Eire", "ireland"],
    "FR": ["France", "FR", "france"], "ES": ["Spain", "ES", "España"],
    "NL": ["Netherlands", "The Netherlands", "Holland", "NL"], "SG": ["Singapore", "SG"],
    "AU": ["Australia", "AU", "AUS"], "FI": ["Finland", "FI", "Suomi"], "IN": ["India", "IN"],
    "CA": ["Canada", "CA", "canada"], "IT": ["Italy", "Italia", "IT"], "JP": ["Japan", "JP"],
    "ZA": ["South Africa", "ZA", "RSA"], "NO": ["Norway", "NO", "Norge"],
    "PL": ["Poland", "PL", "Polska"], "BR": ["Brazil", "Brasil", "BR"],
}

DIAL = {"US": "1", "CA": "1", "GB": "44", "IE": "353", "DE": "49", "FR": "33", "ES": "34",
        "NL": "31", "SG": "65", "AU": "61", "FI": "358", "IN": "91", "IT": "39", "JP": "81",
        "ZA": "27", "NO": "47", "PL": "48", "BR": "55"}


def phone_digits(country):
    if country in ("US", "CA"):
        return rng.choice(["415", "212", "617", "312", "512", "604", "416"]) + "555" + \
            f"{rng.randrange(100, 199):04d}"
    if country == "GB":
        return "7700900" + f"{rng.randrange(0, 999):03d}"
    return str(rng.randrange(10 ** 8, 10 ** 9))


def messy_phone(country, digits):
    d, cc = digits, DIAL[country]
    style = rng.choices(range(9), weights=[4, 3, 3, 2, 2, 2, 1, 2, 1])[0]
    if style == 0:
        return f"+{cc} {d[:3]} {d[3:6]} {d[6:]}"
    if style == 1:
        return f"+{cc}{d}"
    if style == 2:
        return f"({d[:3]}) {d[3:6]}-{d[6:]}" if country in ("US", "CA") else f"0{d[:3]} {d[3:]}"
    if style == 3:
        return f"00{cc}-{d[:3]}-{d[3:]}"
    if style == 4:
        return f"{d[:3]}.{d[3:6]}.{d[6:]}"
    if style == 5:
        return f"+{cc} ({d[:3]}) {d[3:6]} {d[6:]} ext. {rng.randrange(10, 400)}"
    if style == 6:
        return d[-7:]  # local number, no area code
    if style == 7:
        return ""
    return rng.choice(["n/a", "-", "tbd", "0000000000"])


def messy_case(s):
    r = rng.random()
    if r < 0.6:
        return s
    if r < 0.75:
        return s.upper()
    if r < 0.9:
        return s.lower()
    return " " + s + "  "


def messy_email(email):
    r = rng.random()
    if r < 0.6:
        return email
    if r < 0.72:
        local, _, dom = email.partition("@")
        return local.capitalize() + "@" + dom.upper()
    if r < 0.8:
        return email + " "
    if r < 0.86:
        return email.replace(".com", ".con").replace(".de", ".d")
    if r < 0.92:
        return email.split("@")[0] + "@" + email.split("@")[1].split(".")[0]
    return ""


def messy_company(company):
    r = rng.random()
    if r < 0.5:
        return company
    if r < 0.62:
        return company + rng.choice([" Inc.", ", Inc", " LLC", " Ltd", " GmbH", " Ltd."])
    if r < 0.72:
        return company.upper()
    if r < 0.8:
        return company.lower()
    if r < 0.88:
        return company.replace("&", "and").replace(" and ", " & ")
    if r < 0.94:
        return "".join(w[0] for w in company.split()).upper()  # initials only
    return ""


def gen_people(n):
    people = []
    for _ in range(n):
        company, domain, country = rng.choice(PROSPECTS)
        first, last = person(country)
        people.append({
            "first": first, "last": last, "company": company, "country": country,
            "email": email_for(first, last, domain), "phone": phone_digits(country),
            "title": rng.choice(TITLES),
        })
    return people


def hubspot_fields(p):
    first, last = messy_case(p["first"]), messy_case(p["last"])
    if rng.random() < 0.07:  # whole name jammed into the first-name field
        first, last = f"{p['first']} {p['last']}", ""
    return {
        "firstname": first,
        "lastname": last,
        "email": messy_email(p["email"]),
        "phone": messy_phone(p["country"], p["phone"]),
        "company": messy_company(p["company"]),
        "jobtitle": p["title"] if rng.random() < 0.85 else rng.choice(["", p["title"].lower()]),
        "country": rng.choice(COUNTRY_VARIANTS[p["country"]]) if rng.random() < 0.9 else "",
        "lifecyclestage": rng.choice(["lead", "lead", "subscriber", "marketingqualifiedlead",
                                      "salesqualifiedlead", ""]),
        "createdate": rng.choice(["2026-11-24T18:02:11Z", "11/24/2026", "24.11.2026",
                                  "2026-11-24", "Nov 24, 2026"]),
    }


BOOTH_NOTES = ["wants demo", "asked about SSO", "talked pricing, 50 seats", "uses Tableau today",
               "follow up in Jan", "", "", "", "student", "competitor?", "hot!! budget approved",
               "interested in embedded analytics", "scanned badge only", "send case study"]


def csv_fields(p):
    name = f"{p['first']} {p['last']}"
    r = rng.random()
    if r < 0.2:
        name = f"{p['last'].upper()}, {p['first']}"
    elif r < 0.3:
        name = name.lower()
    elif r < 0.35:
        name = p["first"]  # last name missing
    return {
        "Full Name": name,
        "Email": messy_email(p["email"]),
        "Phone": messy_phone(p["country"], p["phone"]),
        "Company": messy_company(p["company"]),
        "Job Title": p["title"] if rng.random() < 0.8 else "",
        "Country": rng.choice(COUNTRY_VARIANTS[p["country"]]) if rng.random() < 0.85 else "",
        "Notes": rng.choice(BOOTH_NOTES),
    }


def gen_records():
    events = []
    people = gen_people(69)
    # Burst 1: the nightly HubSpot sync, 45 contacts, five of them twice (near-duplicates).
    hs_people = people[:40] + [people[i] for i in (3, 11, 17, 26, 33)]
    rng.shuffle(hs_people)
    t = at(3, 10, 4)
    for p in hs_people:
        t += rng.randrange(0, 3)
        rid = f"hubspot:{rng.randrange(51000000, 59999999)}"
        events.append((t, "record.imported", "rec-" + rid.replace(":", "-"), {
            "record_id": rid, "source": "hubspot_sync", "batch_id": "imp-20261125-0310",
            "imported_at": iso(t), "fields": hubspot_fields(p),
        }))
    # Burst 2: marketing uploads the trade-show badge scans, 35 rows; six people were also in
    # the HubSpot sync.
    csv_people = people[40:] + [people[i] for i in (1, 7, 11, 20, 29, 38)]
    csv_people = csv_people[:35]
    rng.shuffle(csv_people)
    t = at(16, 42, 18)
    for row, p in enumerate(csv_people, start=2):  # row 1 is the header
        t += rng.randrange(0, 2)
        rid = f"csv:saas-connect-leads.csv:{row}"
        events.append((t, "record.imported", f"rec-csv-7741-{row}", {
            "record_id": rid, "source": "csv_upload", "batch_id": "imp-20261125-1642",
            "imported_at": iso(t), "fields": csv_fields(p),
        }))
    return events


# ── form submissions ───────────────────────────────────────────────────────────────────────────

# (form, company or "" for none, country, message)
FORMS = [
    ("Demo request", "Brenner Spedition", "DE",
     "We're a 60-person logistics company looking to replace our Excel KPI pack. Could we see a "
     "demo focused on operations dashboards next week? Tuesday or Thursday afternoon CET works "
     "best."),
    ("Demo request", "Tallyworks", "US",
     "Interested in a demo of embedded analytics for our SaaS product. We have about 400 customer "
     "accounts that would each need their own view of their data."),
    ("Demo request", "Ridgeway Home Services", "US",
     "Please show us how Brightlane connects to Salesforce and HubSpot at the same time. Our "
     "sales team uses one and marketing uses the other."),
    ("Demo request", "Castell Wealth", "GB",
     "Looking for a short demo for our leadership team (5 people). The main question is whether "
     "non-technical people can build their own reports."),
    ("Demo request", "St. Anselm Medical Center", "US",
     "We need a tool for bed occupancy and staffing reporting. Can you demo with healthcare "
     "examples? HIPAA compliance is a must."),
    ("Demo request", "", "AU",
     "hi just exploring options for my small agency, is a demo necessary or can I just try it?"),
    ("Demo request", "Marisol Foods", "MX",
     "We'd like to understand how Brightlane handles multi-currency reporting. We operate in 14 "
     "countries and consolidate in USD."),
    ("Pricing question", "Open Harbour Trust", "GB",
     "Do you offer nonprofit pricing? We're a registered charity with about 35 staff."),
    ("Pricing question", "Vantor Systems", "US",
     "What's the price for 12 editors and around 200 view-only users? The pricing page isn't "
     "clear on whether viewers count as seats."),
    ("Pricing question", "Helix Biotech", "DE",
     "Is there a discount for paying two years upfront? We're on Business monthly right now."),
    ("Pricing question", "Lumo Interiors", "FI",
     "Can we pay in EUR by SEPA transfer? Our finance team doesn't use company credit cards."),
    ("Pricing question", "Grayson Manufacturing", "US",
     "Roughly how much does the Enterprise plan cost? I need a ballpark for next year's budget "
     "before I can even get a call approved."),
    ("Pricing question", "Universidad de Salamanca", "ES",
     "We're a university research group. Is there an academic discount?"),
    ("Pricing question", "Quickset Labs", "IN", "Hi, does the Team plan include API access?"),
    ("Partnership inquiry", "Nube Consultores", "ES",
     "We're a Salesforce consultancy in Madrid with about 40 consultants. Several clients have "
     "asked about Brightlane. Do you have a reseller or implementation partner program?"),
    ("Partnership inquiry", "Pipewise", "US",
     "We run a data connector platform with 300+ sources and would like to discuss a native "
     "integration and some co-marketing."),
    ("Partnership inquiry", "The RevOps Hour", "US",
     "I host a podcast about RevOps, about 12k monthly listeners. Would Brightlane be interested "
     "in sponsoring episodes in Q1?"),
    ("Partnership inquiry", "Achterberg Accountants", "NL",
     "We're an accounting firm serving 150 SMB clients and want to offer them dashboards under "
     "our own brand. Is white-labeling possible?"),
    ("Partnership inquiry", "RankRocket SEO", "IN",
     "SEO agency here. We can get you on page 1 for 'business dashboard software', guaranteed. "
     "Reply for a free audit!!"),
    ("Contact us", "Tidewater Foods", "US",
     "I can't log in since this morning and the password reset email doesn't arrive. My "
     "username is the same as this email."),
    ("Contact us", "Elmstead Properties", "GB",
     "Our November invoice has the wrong company address. Who should I contact to get it "
     "corrected?"),
    ("Contact us", "Kranich Software", "DE",
     "Where is your data hosted? Our DPO needs to know before we can sign the DPA. We also need "
     "your list of subprocessors."),
    ("Contact us", "", "FR",
     "Please delete all my personal data under GDPR Article 17. I signed up for a trial last year "
     "and no longer want an account."),
    ("Contact us", "Umbra Security", "US",
     "We need a completed security questionnaire (CAIQ Lite) and your SOC 2 Type II report for "
     "vendor review. Happy to sign an NDA first."),
    ("Contact us", "Fernhill Studio", "IE",
     "Our trial expired while I was on holiday. Could it be extended by a week? We were just "
     "about to show it to our director."),
]


def gen_forms():
    out = []
    for form, company, country, message in FORMS:
        t = time_in(BUSINESS_HOURS)
        first, last = person(country)
        if company:
            match = [c for c in CUST if c.company == company]
            domain = match[0].domain if match else company_domain(company)
            mail = email_for(first, last, domain)
        else:
            mail = f"{slug(first)}{rng.randrange(1, 999)}@{rng.choice(['gmail.com', 'outlook.com', 'icloud.com'])}"
        out.append((t, {
            "submission_id": None, "form": form, "submitted_at": iso(t),
            "name": f"{first} {last}", "email": mail, "company": company,
            "page": "https://brightlane.io/" + {"Demo request": "demo", "Pricing question": "pricing",
                                                "Partnership inquiry": "partners",
                                                "Contact us": "contact"}[form],
            "message": message,
        }))
    out.sort(key=lambda x: x[0])
    events = []
    for n, (t, p) in enumerate(out):
        p["submission_id"] = f"fs_{31870 + n}"
        events.append((t, "form.submitted", f"form-{31870 + n}", p))
    return events


# ── main ───────────────────────────────────────────────────────────────────────────────────────


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "events.jsonl")
    events = []
    # Fixed order: each generator draws from the one seeded stream.
    for gen in (gen_reports, gen_tickets, gen_leads, gen_payments, gen_adspend, gen_social,
                gen_content, gen_records, gen_forms):
        events.extend(gen())
    events.sort(key=lambda e: (e[0], e[2]))
    keys = [e[2] for e in events]
    assert len(keys) == len(set(keys)), "duplicate idempotency keys"
    with open(out_path, "w", encoding="utf-8", newline="\n") as f:
        for _, etype, key, payload in events:
            line = {"type": etype, "idempotency_key": key, "payload": payload}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    counts = {}
    for e in events:
        counts[e[1]] = counts.get(e[1], 0) + 1
    print(f"wrote {len(events)} events to {out_path}: " +
          ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
