"""The bundled text-to-SQL data: schemas, seeded rows and question/SQL pairs the project generates itself.

    python -m shared.data.sqlgen --out /tmp/sqlgen   # writes the splits as JSONL and the SQLite files

Two uses:
- `bundled_sql_splits(seed)`: the fine-tuning/evaluation data in the sql-create-context record format
  (question, context = CREATE TABLE statements, answer = SQL) plus db_id/db_path, over 8 hand-written
  databases and 300 composed ones. Six hand-written and the composed ones are "seen" (train/dev/test,
  split by gold SQL so no test query appears in training); two are held out for `test_unseen`. Every gold query is executed by the generator and must return rows.
- `pretrain_documents(rng, n)`: English paired with SQL over randomly composed schemas, in a format that is
  NOT the fine-tuning prompt, so the base learns to copy names and values from context into SQL without
  learning the task prompt. Used by shared/micro.py to pretrain the embedded default model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sqlite3
import sysconfig
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from shared.paths import cache_dir

GENERATOR_VERSION = "3"
N_COMPOSED = 300  # composed two-table schemas added to the six hand-written seen ones
PER_COMPOSED = 30  # examples drawn from each

# ------------------------------------------------------------------------------------------ vocabulary

FIRST = (
    "Alice Bruno Carla Dmitri Elena Farid Grace Hiro Ines Jonas Kemal Lena Marco Nadia Oscar Priya Quinn "
    "Rosa Samir Tara Umar Vera Wade Xenia Yusuf Zoe Amara Boris Chen Dalia Emil Fatima Gus Hana Ivan Jade "
    "Karl Luz Mika Nils Olga Pablo Rhea Sven Tomas Ugo Vik Wren Yara"
).split()
LAST = (
    "Smith Novak Garcia Ito Kowalski Silva Dubois Rossi Jensen Okafor Tanaka Moreau Petrov Haddad Costa "
    "Larsen Nguyen Weber Ortiz Khan Berg Fischer Lopez Mehta Sato Varga Young Zhou Adler Brandt"
).split()
WORDS = (
    "Blue Red Green Silver Golden Iron Stone River Lake Forest Sun Moon Star Cloud Storm Fire Ice North "
    "South East West Royal Grand Little Old New Bright Dark Swift Quiet Wild Crystal Amber Ruby Jade"
).split()
NOUNS = (
    "Tower Bridge Garden Harbor Valley Peak Road Field Castle Gate Hill Bay Island Park Square Mill Port "
    "Lantern Arrow Falcon Wolf Bear Fox Hawk Lion Tiger Owl Crown Anchor Compass"
).split()
CITIES = (
    "Paris London Berlin Madrid Rome Vienna Prague Lisbon Dublin Oslo Tokyo Seoul Lima Cairo Nairobi "
    "Toronto Denver Austin Boston Chicago Sydney Perth Mumbai Delhi Quito Bogota Warsaw Athens Zurich Riga"
).split()
COUNTRIES = (
    "France Spain Italy Germany Japan Brazil Canada Mexico Kenya Egypt India Chile Peru Norway Sweden "
    "Poland Greece Ireland Portugal Austria Vietnam Ghana Morocco Turkey Australia"
).split()

_SYL = "ka lo mi re tu sa ne vo zi pa da ri ko ma le ti no ru be fi ga hu ja ke".split()


def pseudo_word(rng: random.Random) -> str:
    """A made-up capitalized word: values the model cannot have memorized, so it must copy them."""
    return "".join(rng.choice(_SYL) for _ in range(rng.randint(2, 3))).capitalize()


def person(rng):
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def title(rng):
    return f"{rng.choice(WORDS)} {rng.choice(NOUNS)}"


# ------------------------------------------------------------------------------------- schema model


@dataclass
class Column:
    name: str
    kind: str  # "label" (the row's name/title), "cat" (categorical text), "int", "real", "fk"
    values: object = None  # cat: list of values; int/real: (lo, hi); label: callable(rng) -> str
    phrase: str = ""  # how questions call it ("net worth" for net_worth)

    @property
    def sql_type(self):
        return {"label": "TEXT", "cat": "TEXT", "int": "INTEGER", "real": "REAL", "fk": "INTEGER"}[self.kind]

    def say(self):
        return self.phrase or self.name.replace("_", " ")


@dataclass
class Table:
    name: str  # plural, e.g. "employees"
    singular: str
    columns: list[Column]
    n_rows: int = 40

    def col(self, kind):
        return [c for c in self.columns if c.kind == kind]

    @property
    def label(self) -> Column:
        return self.col("label")[0]


@dataclass
class Database:
    db_id: str
    parent: Table  # referenced by child.<parent.singular>_id
    child: Table
    rows: dict = field(default_factory=dict)  # table name -> list of row dicts

    @property
    def tables(self):
        return [self.parent, self.child]

    @property
    def fk(self) -> str:
        return f"{self.parent.singular}_id"

    def ddl(self) -> str:
        out = []
        for t in self.tables:
            cols = ["id INTEGER PRIMARY KEY"] + [f"{c.name} {c.sql_type}" for c in t.columns]
            if t is self.child:
                cols.append(f"FOREIGN KEY ({self.fk}) REFERENCES {self.parent.name}(id)")
            out.append(f"CREATE TABLE {t.name} ({', '.join(cols)});")
        return "\n".join(out)


def _cat(name, values, phrase=""):
    return Column(name, "cat", list(values), phrase)


def _int(name, lo, hi, phrase=""):
    return Column(name, "int", (lo, hi), phrase)


def _real(name, lo, hi, phrase=""):
    return Column(name, "real", (lo, hi), phrase)


def _label(name="name", gen=person):
    return Column(name, "label", gen)


def _fk(parent_singular):
    return Column(f"{parent_singular}_id", "fk")


def _db(db_id, parent, child):
    return Database(db_id, parent, child)


def seen_databases() -> list[Database]:
    """The six databases of the train/dev/test splits."""
    return [
        _db(
            "company",
            Table("departments", "department", [_label("name", title), _int("budget", 100, 900), _int("floor", 1, 12)], 12),
            Table(
                "employees",
                "employee",
                [_label(), _int("age", 21, 65), _cat("city", CITIES[:10]), _real("salary", 30, 150), _fk("department")],
                60,
            ),
        ),
        _db(
            "music",
            Table("singers", "singer", [_label(), _cat("country", COUNTRIES[:8]), _int("age", 18, 70), _real("net_worth", 1, 90, "net worth")], 30),
            Table(
                "concerts",
                "concert",
                [_label("title", title), _cat("venue", [f"{w} Hall" for w in WORDS[:8]]), _int("year", 2005, 2024), _int("attendance", 200, 9000), _fk("singer")],
                60,
            ),
        ),
        _db(
            "library",
            Table("authors", "author", [_label(), _cat("nationality", COUNTRIES[5:13]), _int("birth_year", 1920, 1995, "birth year")], 25),
            Table(
                "books",
                "book",
                [_label("title", title), _cat("genre", "Fantasy Mystery Romance History Poetry Science Travel".split()), _int("pages", 90, 900), _real("price", 5, 60), _fk("author")],
                60,
            ),
        ),
        _db(
            "sports",
            Table("teams", "team", [_label("name", lambda r: f"{rng_city(r)} {r.choice(NOUNS)}s"), _cat("city", CITIES[10:20]), _int("founded", 1890, 2010)], 14),
            Table(
                "players",
                "player",
                [_label(), _cat("position", "Goalkeeper Defender Midfielder Forward".split()), _int("age", 17, 39), _int("goals", 0, 60), _fk("team")],
                60,
            ),
        ),
        _db(
            "store",
            Table("customers", "customer", [_label(), _cat("city", CITIES[5:15]), _cat("membership", "Gold Silver Bronze Basic".split())], 30),
            Table(
                "orders",
                "order",
                [_label("product", lambda r: f"{r.choice(WORDS)} {r.choice(['Lamp', 'Chair', 'Desk', 'Mug', 'Kettle', 'Clock', 'Rug', 'Vase'])}"), _cat("status", "Shipped Pending Cancelled Delivered".split()), _int("quantity", 1, 20), _real("amount", 5, 500), _fk("customer")],
                70,
            ),
        ),
        _db(
            "school",
            Table("teachers", "teacher", [_label(), _cat("subject", "Math Physics Biology History Art Music Chemistry".split()), _int("experience", 1, 35)], 15),
            Table(
                "students",
                "student",
                [_label(), _int("grade", 7, 12), _cat("hometown", CITIES[15:25]), _real("gpa", 1.5, 4.0, "GPA"), _fk("teacher")],
                60,
            ),
        ),
    ]


def unseen_databases() -> list[Database]:
    """Two databases never seen in fine-tuning: the `test_unseen` split. No table or column name here (but `id`
    and the foreign keys made from a singular) is used by any training schema, pretraining document or drill
    (`held_out_names`), so the split measures reading a schema, not remembering one."""
    return [
        _db(
            "hospital",
            Table("wards", "ward", [_label("designation", title), _int("beds", 5, 60), _cat("wing", "Alpha Beta Gamma Delta".split())], 12),
            Table(
                "patients",
                "patient",
                [_label("fullname", person), _real("dosage", 1, 40), _cat("blood_group", "A B AB O".split(), "blood group"), _real("body_mass", 3, 120, "body mass"), _fk("ward")],
                60,
            ),
        ),
        _db(
            "aviation",
            Table("airlines", "airline", [_label("carrier", lambda r: f"{r.choice(WORDS)} Air"), _cat("homeland", COUNTRIES[12:20]), _int("fleet_size", 5, 300, "fleet size")], 12),
            Table(
                "flights",
                "flight",
                [_label("flight_code", lambda r: f"{r.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}{r.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}{r.randint(100, 999)}"), _cat("destination", CITIES[20:30]), _int("distance", 200, 9000), _real("fare", 40, 1500), _fk("airline")],
                70,
            ),
        ),
    ]


@cache
def held_out_names() -> frozenset[str]:
    """Every table name, singular and column name of the held-out databases (`id` and foreign keys aside),
    with its other number: no training schema, document or drill may use one."""
    names = set()
    for db in unseen_databases():
        for t in db.tables:
            names |= {t.name, t.singular} | {c.name for c in t.columns if c.kind != "fk"}
    return frozenset(names | {n + "s" for n in names} | {n[:-1] for n in names if n.endswith("s")})


_SQL_WORDS = frozenset(
    "select from where group order limit count having join distinct between and desc asc table create insert "
    "values into integer text real primary key foreign references null not like union case when then else end "
    "index view with natural left right inner outer cross using exists offset except intersect default check "
    "unique constraint delete update drop alter column glob match regexp escape collate cast current true false rowid".split()
)


@cache
def name_vocabulary() -> tuple[str, ...]:
    """Thousands of English words (4-10 letters, frequent in the Python standard library's own source), for
    table and column names that a model cannot guess from a short list: copying from the schema is then the
    only way to write them. SQL keywords and the held-out names are left out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    counts: dict[str, int] = {}
    for path in sorted(root.glob("*.py")):
        for w in re.findall(r"\b[a-z]{4,10}\b", path.read_text(errors="ignore")):
            counts[w] = counts.get(w, 0) + 1
    banned = _SQL_WORDS | held_out_names()
    return tuple(sorted(w for w, k in counts.items()
                        if k >= 8 and w not in banned and w + "s" not in banned and _usable_name(w) and _usable_name(w + "s")))


def _usable_name(word: str) -> bool:
    """SQLite runs, and sqlglot (the scorer's parser) parses, `word` unquoted as a table and a column name:
    most keywords fail one or the other ("exclude" runs in SQLite and does not parse in sqlglot)."""
    import sqlglot

    create = f"CREATE TABLE {word} (id INTEGER, {word} INTEGER, other TEXT)"
    select = f"SELECT T1.{word}, COUNT(*) FROM {word} AS T1 WHERE {word} = 1 GROUP BY {word} ORDER BY {word}"
    con = sqlite3.connect(":memory:")
    try:
        con.execute(create)
        con.execute(select)
        return all(len(sqlglot.parse(sql, read="sqlite")) == 1 for sql in (create, select))
    except (sqlite3.Error, sqlglot.errors.SqlglotError):
        return False
    finally:
        con.close()


_SYL_WIDE = [c + v for c in "bcdfghjklmnprstvwxyz" for v in "aeiou"] + ["th", "st", "ar", "en", "on", "il"]


def made_up(rng: random.Random) -> str:
    """A value the model cannot have memorized (capitalized): a vocabulary word, a word of wide syllables,
    the narrow syllables of `pseudo_word`, or a code like "QX42"."""
    r = rng.random()
    if r < 0.4:
        return rng.choice(name_vocabulary()).capitalize()
    if r < 0.7:
        return "".join(rng.choice(_SYL_WIDE) for _ in range(rng.randint(2, 4))).capitalize()
    if r < 0.9:
        return pseudo_word(rng)
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    return rng.choice(letters) + rng.choice(letters) + str(rng.randint(1, 999))


def made_up_name(rng: random.Random) -> str:
    """A table or column name: one vocabulary word, or two joined by `_`."""
    words = name_vocabulary()
    return rng.choice(words) if rng.random() < 0.6 else f"{rng.choice(words)}_{rng.choice(words)}"


def rng_city(rng):
    return rng.choice(CITIES)


# --------------------------------------------------------------------------------- random schemas

_ENTITIES = [
    ("artists", "artist"), ("museums", "museum"), ("ships", "ship"), ("farms", "farm"), ("clubs", "club"),
    ("cars", "car"), ("movies", "movie"), ("games", "game"), ("hotels", "hotel"), ("parks", "park"),
    ("schools", "school"), ("shops", "shop"), ("trains", "train"), ("bands", "band"), ("albums", "album"),
    ("stations", "station"), ("events", "event"), ("courses", "course"), ("recipes", "recipe"),
    ("restaurants", "restaurant"), ("gardens", "garden"), ("projects", "project"), ("companies", "company"),
    ("machines", "machine"), ("rivers", "river"), ("mountains", "mountain"), ("planets", "planet"),
    ("festivals", "festival"), ("vendors", "vendor"), ("clients", "client"), ("members", "member"),
    ("pilots", "pilot"), ("drivers", "driver"), ("trucks", "truck"), ("routes", "route"), ("stores", "store"),
    ("buildings", "building"), ("rooms", "room"), ("devices", "device"), ("sensors", "sensor"),
    ("animals", "animal"), ("plants", "plant"), ("journals", "journal"), ("papers", "paper"),
    ("editors", "editor"), ("lawyers", "lawyer"), ("cases", "case"), ("banks", "bank"), ("accounts", "account"),
    ("tours", "tour"), ("guides", "guide"), ("chefs", "chef"), ("dishes", "dish"), ("painters", "painter"),
    ("paintings", "painting"), ("islands", "island"), ("villages", "village"), ("bridges", "bridge"),
]
_CAT_ATTRS = [
    ("city", CITIES), ("country", COUNTRIES), ("color", "Red Blue Green Black White Yellow Purple".split()),
    ("status", "Active Closed Pending Retired Open".split()), ("category", None), ("type", None),
    ("region", "North South East West Central".split()), ("level", "Low Medium High".split()),
    ("genre", "Jazz Rock Pop Folk Blues Opera".split()), ("language", "English French Spanish Hindi Swahili Korean".split()),
    ("brand", None), ("owner", None), ("style", None), ("district", None), ("material", "Wood Steel Glass Stone Clay".split()),
    ("size", "Small Medium Large".split()), ("rank", "Bronze Silver Gold Platinum".split()), ("climate", "Dry Wet Cold Warm".split()),
]
_NUM_ATTRS = [
    ("age", "int", 1, 90), ("year", "int", 1950, 2024), ("price", "real", 1, 900), ("rating", "real", 1, 10),
    ("capacity", "int", 10, 5000), ("weight", "real", 1, 500), ("height", "real", 1, 300), ("score", "int", 0, 100),
    ("length", "int", 1, 400), ("speed", "int", 10, 300), ("population", "int", 100, 90000), ("budget", "int", 10, 999),
    ("area", "real", 1, 800), ("cost", "real", 1, 700), ("duration", "int", 1, 240), ("visitors", "int", 10, 9000),
    ("employees", "int", 1, 800), ("floors", "int", 1, 90), ("wins", "int", 0, 50), ("sales", "real", 1, 999),
    ("num_staff", "int", 1, 300), ("opening_year", "int", 1900, 2024), ("total_points", "int", 0, 999), ("max_speed", "int", 20, 400),
    ("seats", "int", 2, 800), ("volume", "real", 1, 99), ("depth", "real", 1, 90), ("members", "int", 2, 600),
    ("revenue", "real", 1, 999), ("balance", "real", 1, 999), ("quantity", "int", 1, 99), ("temperature", "real", -20, 45),
    ("start_year", "int", 1950, 2024), ("monthly_fee", "real", 5, 300), ("num_items", "int", 1, 90), ("crew_size", "int", 1, 60),
]
_LABELS = ["name", "title", "code", "label", "nickname"]


def random_database(rng: random.Random, novel: float = 0.6) -> Database:
    """A randomly composed two-table schema (never using a held-out name, see `held_out_names`).

    Each table name and each attribute name is, with probability `novel`, made up from a vocabulary of
    thousands of words (`made_up_name`), and so are the values: a model that guesses names and values from
    a prior of familiar ones gains little, so copying from the schema and the question is what lowers the
    loss. With only familiar names, a base pretrained on these wrote held-out tables as words of its own.
    """
    banned = held_out_names()
    entities = [e for e in _ENTITIES if e[0] not in banned and e[1] not in banned]
    (pname, psing), (cname, csing) = rng.sample(entities, 2)
    if rng.random() < novel:
        psing = rng.choice(name_vocabulary())
        pname = psing if psing.endswith("s") else psing + "s"
    if rng.random() < novel:
        csing = rng.choice(name_vocabulary())
        cname = csing if csing.endswith("s") else csing + "s"
    if cname == pname:
        cname, csing = cname + "_items", csing + "_item"
    labels = [x for x in _LABELS if x not in banned]
    cat_attrs = [a for a in _CAT_ATTRS if a[0] not in banned]
    num_attrs = [a for a in _NUM_ATTRS if a[0] not in banned]

    def table(name, sing, fk=None):
        cols = [Column(made_up_name(rng) if rng.random() < novel / 3 else rng.choice(labels), "label", None)]
        for attr, vals in rng.sample(cat_attrs, rng.randint(1, 2)):
            vals = list(vals) if vals and rng.random() < 0.5 else [made_up(rng) for _ in range(rng.randint(3, 6))]
            if rng.random() < novel:
                attr = made_up_name(rng)
            if attr not in {c.name for c in cols}:
                cols.append(Column(attr, "cat", sorted(set(rng.sample(vals, min(len(vals), rng.randint(3, 7)))))))
        for attr, kind, lo, hi in rng.sample(num_attrs, rng.randint(1, 3)):
            if rng.random() < novel:
                attr = made_up_name(rng)
            if attr not in {c.name for c in cols} and attr != f"{psing}_id":
                cols.append(Column(attr, kind, (lo, hi)))
        rng.shuffle(cols)
        if fk:
            cols.append(_fk(fk))
        return Table(name, sing, cols, rng.randint(8, 20))

    gen = rng.choice([person, title, made_up, lambda r: f"{made_up(r)} {r.choice(NOUNS)}"])
    parent = table(pname, psing)
    child = table(cname, csing, fk=psing)
    for t in (parent, child):
        t.label.values = gen
    return Database(f"{pname}_{cname}", parent, child)


# ------------------------------------------------------------------------------------------- rows


def populate(db: Database, rng: random.Random) -> None:
    """Seeded rows; labels unique per table so a question naming one row means exactly one row."""
    for t in db.tables:
        rows, seen = [], set()
        for i in range(1, t.n_rows + 1):
            row = {"id": i}
            for c in t.columns:
                if c.kind == "label":
                    v = c.values(rng)
                    while v in seen:
                        v = c.values(rng)
                    seen.add(v)
                elif c.kind == "cat":
                    v = rng.choice(c.values)
                elif c.kind == "int":
                    v = rng.randint(*c.values)
                elif c.kind == "real":
                    v = round(rng.uniform(*c.values), 1)
                else:  # fk
                    v = rng.randint(1, db.parent.n_rows)
                row[c.name] = v
            rows.append(row)
        db.rows[t.name] = rows


def populate_synthesized(db: Database, path: Path, seed: int) -> bool:
    """Rows from the test-database synthesizer (shared/data/synth.py) on the schema's CREATE TABLE text, read
    back into `db.rows`, the categorical columns' values being those drawn. False (nothing kept) when a table
    got fewer than 4 rows, too few for the questions' ranges. An even seed draws no NULLs."""
    from shared.data.synth import synthesize_database

    path.parent.mkdir(parents=True, exist_ok=True)
    synthesize_database(db.ddl(), path, seed=seed, rows=(8, 16))
    con = sqlite3.connect(path)
    try:
        rows = {}
        for t in db.tables:
            cur = con.execute(f"SELECT * FROM {t.name}")
            names = [d[0] for d in cur.description]
            rows[t.name] = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
    if min(len(r) for r in rows.values()) < 4:
        path.unlink()
        return False
    db.rows = rows
    for t in db.tables:
        for c in t.col("cat"):
            c.values = sorted({r[c.name] for r in rows[t.name]})
    return True


def write_sqlite(db: Database, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    con.executescript(db.ddl())
    for t in db.tables:
        names = ["id"] + [c.name for c in t.columns]
        con.executemany(
            f"INSERT INTO {t.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            [[r[n] for n in names] for r in db.rows[t.name]],
        )
    con.commit()
    con.close()
    tmp.replace(path)  # atomic: a reader never sees a half-written database
    return path


# -------------------------------------------------------------------------------------- questions


def _q(v):
    return "'" + str(v).replace("'", "''") + "'"


def _num(v):
    return str(v)


def questions(db: Database, rng: random.Random) -> list[tuple[str, str]]:
    """One random (question, SQL) pair from each template that fits the schema; values come from real rows."""
    out = []
    p, c = db.parent, db.child
    for t in (p, c):
        rows = db.rows[t.name]
        row = rng.choice(rows)
        lab = t.label
        cats, nums = t.col("cat"), t.col("int") + t.col("real")
        T, S = t.name, t.singular
        if cats:
            cc = rng.choice(cats)
            v = row[cc.name]
            out += [
                (rng.choice([f"List the {lab.say()} of {T} whose {cc.say()} is {v}.", f"Which {T} have {cc.say()} {v}? Give their {lab.say()}.", f"Show the {lab.say()} of all {T} with {cc.say()} {v}."]),
                 f"SELECT {lab.name} FROM {T} WHERE {cc.name} = {_q(v)}"),
                (rng.choice([f"How many {T} have {cc.say()} {v}?", f"Count the {T} whose {cc.say()} is {v}.", f"What is the number of {T} with {cc.say()} {v}?"]),
                 f"SELECT COUNT(*) FROM {T} WHERE {cc.name} = {_q(v)}"),
                (rng.choice([f"Show each {cc.say()} and the number of {T}.", f"How many {T} are there for each {cc.say()}?", f"Count the {T} per {cc.say()}."]),
                 f"SELECT {cc.name}, COUNT(*) FROM {T} GROUP BY {cc.name}"),
                (rng.choice([f"Which {cc.say()} has the most {T}?", f"What is the most common {cc.say()} among {T}?"]),
                 f"SELECT {cc.name} FROM {T} GROUP BY {cc.name} ORDER BY COUNT(*) DESC LIMIT 1"),
                (rng.choice([f"List the distinct {cc.say()} values of {T}.", f"What are the different {cc.say()} values of {T}?"]),
                 f"SELECT DISTINCT {cc.name} FROM {T}"),
            ]
            k = max(1, sorted([sum(r[cc.name] == x for r in rows) for x in cc.values])[len(cc.values) // 2] - 1)
            out.append((rng.choice([f"Which {cc.say()} values have more than {k} {T}?", f"List each {cc.say()} with more than {k} {T}."]),
                        f"SELECT {cc.name} FROM {T} GROUP BY {cc.name} HAVING COUNT(*) > {k}"))
        if nums:
            n = rng.choice(nums)
            vals = sorted(r[n.name] for r in rows)
            x = vals[rng.randint(len(vals) // 4, 3 * len(vals) // 4)]
            a, b = sorted(rng.sample(vals[1:-1], 2))
            k = rng.randint(2, 5)
            agg, word = rng.choice([("AVG", "average"), ("MAX", "maximum"), ("MIN", "minimum"), ("SUM", "total")])
            op, opw = rng.choice([(">", "greater than"), ("<", "less than"), (">", "more than"), ("<", "below")])
            out += [
                (rng.choice([f"How many {T} have {n.say()} {opw} {x}?", f"Count the {T} with {n.say()} {opw} {x}."]),
                 f"SELECT COUNT(*) FROM {T} WHERE {n.name} {op} {_num(x)}"),
                (rng.choice([f"What is the {word} {n.say()} of all {T}?", f"Find the {word} {n.say()} of {T}."]),
                 f"SELECT {agg}({n.name}) FROM {T}"),
                (rng.choice([f"List the {lab.say()} of the {k} {T} with the highest {n.say()}.", f"Show the top {k} {T} by {n.say()}; give their {lab.say()}."]),
                 f"SELECT {lab.name} FROM {T} ORDER BY {n.name} DESC LIMIT {k}"),
                (rng.choice([f"Which {S} has the lowest {n.say()}? Give its {lab.say()}.", f"What is the {lab.say()} of the {S} with the smallest {n.say()}?"]),
                 f"SELECT {lab.name} FROM {T} ORDER BY {n.name} ASC LIMIT 1"),
                (rng.choice([f"List the {lab.say()} and {n.say()} of {T} with {n.say()} between {a} and {b}.", f"Show {lab.say()} and {n.say()} for {T} whose {n.say()} is between {a} and {b}."]),
                 f"SELECT {lab.name}, {n.name} FROM {T} WHERE {n.name} BETWEEN {_num(a)} AND {_num(b)}"),
                (rng.choice([f"What is the {n.say()} of the {S} whose {lab.say()} is {row[lab.name]}?", f"Give the {n.say()} of {row[lab.name]}."]),
                 f"SELECT {n.name} FROM {T} WHERE {lab.name} = {_q(row[lab.name])}"),
            ]
            if cats:
                cc = rng.choice(cats)
                v = row[cc.name]
                out += [
                    (rng.choice([f"What is the {word} {n.say()} of {T} with {cc.say()} {v}?", f"Find the {word} {n.say()} among {T} whose {cc.say()} is {v}."]),
                     f"SELECT {agg}({n.name}) FROM {T} WHERE {cc.name} = {_q(v)}"),
                    (rng.choice([f"Show each {cc.say()} and the {word} {n.say()} of its {T}.", f"What is the {word} {n.say()} of {T} for each {cc.say()}?"]),
                     f"SELECT {cc.name}, {agg}({n.name}) FROM {T} GROUP BY {cc.name}"),
                    (rng.choice([f"List the {lab.say()} of {T} with {cc.say()} {v} and {n.say()} {opw} {x}.", f"Which {T} have {cc.say()} {v} and {n.say()} {opw} {x}? Give their {lab.say()}."]),
                     f"SELECT {lab.name} FROM {T} WHERE {cc.name} = {_q(v)} AND {n.name} {op} {_num(x)}"),
                ]
    # joins over the foreign key
    prow = db.rows[p.name][rng.randrange(len(db.rows[p.name]))]
    join = f"FROM {c.name} AS T1 JOIN {p.name} AS T2 ON T1.{db.fk} = T2.id"
    out += [
        (rng.choice([f"List the {c.label.say()} of {c.name} whose {p.singular} is {prow[p.label.name]}.", f"Which {c.name} belong to the {p.singular} {prow[p.label.name]}? Give their {c.label.say()}."]),
         f"SELECT T1.{c.label.name} {join} WHERE T2.{p.label.name} = {_q(prow[p.label.name])}"),
        (rng.choice([f"How many {c.name} does the {p.singular} {prow[p.label.name]} have?", f"Count the {c.name} of the {p.singular} {prow[p.label.name]}."]),
         f"SELECT COUNT(*) {join} WHERE T2.{p.label.name} = {_q(prow[p.label.name])}"),
        (rng.choice([f"Show the {p.label.say()} of each {p.singular} and the number of its {c.name}.", f"For each {p.singular}, give its {p.label.say()} and how many {c.name} it has."]),
         f"SELECT T2.{p.label.name}, COUNT(*) {join} GROUP BY T2.id"),
        (rng.choice([f"Which {p.singular} has the most {c.name}? Give its {p.label.say()}.", f"What is the {p.label.say()} of the {p.singular} with the most {c.name}?"]),
         f"SELECT T2.{p.label.name} {join} GROUP BY T2.id ORDER BY COUNT(*) DESC LIMIT 1"),
    ]
    if p.col("cat"):
        pc = rng.choice(p.col("cat"))
        v = prow[pc.name]
        out.append((rng.choice([f"List the {c.label.say()} of {c.name} whose {p.singular} has {pc.say()} {v}.", f"Show the {c.label.say()} of {c.name} of {p.name} with {pc.say()} {v}."]),
                    f"SELECT T1.{c.label.name} {join} WHERE T2.{pc.name} = {_q(v)}"))
    cn = c.col("int") + c.col("real")
    if cn:
        n = rng.choice(cn)
        out.append((rng.choice([f"What is the average {n.say()} of {c.name} for each {p.singular}? Give the {p.singular} {p.label.say()}.", f"Show each {p.singular} {p.label.say()} and the average {n.say()} of its {c.name}."]),
                     f"SELECT T2.{p.label.name}, AVG(T1.{n.name}) {join} GROUP BY T2.id"))
    return out


def _returns_rows(con: sqlite3.Connection, sql: str) -> bool:
    rows = con.execute(sql).fetchall()
    return bool(rows) and not (len(rows) == 1 and rows[0][0] in (0, None))


def examples_for(db: Database, db_path: Path, rng: random.Random, n: int) -> list[dict]:
    """Up to n distinct examples for one database; each gold query is run and must return rows."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    seen, out, tries = set(), [], 0
    while len(out) < n and tries < n * 6:
        tries += 1
        for question, sql in questions(db, rng):
            if question in seen or not _returns_rows(con, sql):
                continue
            seen.add(question)
            out.append({"question": question, "context": db.ddl(), "answer": sql, "db_id": db.db_id, "db_path": str(db_path)})
    con.close()
    return out


def _split_by_answer(examples: list[dict], rng: random.Random, n_dev: int, n_test: int):
    """Groups by gold SQL, so a test query never appears (even paraphrased) in training.

    dev and test keep one question per query (n_dev / n_test distinct queries); train keeps all the rest.
    """
    by_sql: dict[str, list[dict]] = {}
    for ex in examples:
        by_sql.setdefault(ex["answer"], []).append(ex)
    keys = sorted(by_sql)
    rng.shuffle(keys)
    dev = [by_sql[k][0] for k in keys[:n_dev]]
    test = [by_sql[k][0] for k in keys[n_dev : n_dev + n_test]]
    train = [ex for k in keys[n_dev + n_test :] for ex in by_sql[k]]
    return train, dev, test


def bundled_sql_splits(seed: int = 0, root: Path | None = None, per_db: int = 1200) -> dict[str, list[dict]]:
    """train / dev / test (seen schemas) / test_unseen, cached under the cache dir by seed and version."""
    root = root or cache_dir() / "data" / f"sql-v{GENERATOR_VERSION}-seed{seed}-n{per_db}"
    done = root / "splits.json"
    if done.exists():
        return json.loads(done.read_text())
    rng = random.Random(seed)
    seen, unseen = [], []
    for db in seen_databases() + unseen_databases():
        populate(db, rng)
        path = write_sqlite(db, root / "databases" / f"{db.db_id}.sqlite")
        (seen if db.db_id not in {d.db_id for d in unseen_databases()} else unseen).extend(
            examples_for(db, path, rng, per_db if db.db_id not in {"hospital", "aviation"} else per_db // 4)
        )
    # Composed schemas widen the seen set: with only six, a fine-tune memorizes names instead of reading them
    # from the schema, which is what the unseen split needs. Every other one gets its rows from the test-database
    # synthesizer (values like "color 17"), the rest from `populate` (made-up words).
    for i in range(N_COMPOSED):
        db = random_database(rng, novel=0.5)
        db.db_id = f"composed{i:03d}_{db.db_id}"
        path = root / "databases" / f"{db.db_id}.sqlite"
        if not (i % 2 and populate_synthesized(db, path, seed=2 * i)):
            populate(db, rng)
            write_sqlite(db, path)
        seen.extend(examples_for(db, path, rng, PER_COMPOSED))
    train, dev, test = _split_by_answer(seen, rng, n_dev=300, n_test=500)
    rng.shuffle(train)
    rng.shuffle(unseen)
    splits = {"train": train, "dev": dev, "test": test, "test_unseen": unseen[:400]}
    for name, rows in splits.items():
        if not rows:
            raise RuntimeError(f"sqlgen produced an empty {name} split")
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(splits))
    tmp.replace(done)
    return splits


# ------------------------------------------------------------------------------------- pretraining


def recall_documents(rng: random.Random, n: int) -> list[str]:
    """Associative-recall drills: find a key in context, copy what follows it. This is the circuit that
    text-to-SQL needs (column -> value in the question, name -> table in the schema), in its barest form:

        facts: brand Ruka ; capacity 3935 ; city Lima
        Q: capacity? A: 3935
    """
    pool = [a[0] for a in _NUM_ATTRS + _CAT_ATTRS if a[0] not in held_out_names()]
    docs = []
    for _ in range(n):
        keys = list(dict.fromkeys(rng.sample(pool, 3) + [made_up_name(rng) for _ in range(6)]))
        keys = rng.sample(keys, min(len(keys), rng.randint(3, 8)))
        vals = [str(rng.randint(0, 9999)) if rng.random() < 0.4 else made_up(rng) for _ in keys]
        lines = ["facts: " + " ; ".join(f"{k} {v}" for k, v in zip(keys, vals, strict=True))]
        for i in rng.sample(range(len(keys)), min(len(keys), 4)):
            lines.append(f"Q: {keys[i]}? A: {vals[i]}")
        docs.append("\n".join(lines))
    return docs


def pretrain_documents(rng: random.Random, n: int, pairs_per_doc: int = 6) -> list[str]:
    """English/SQL documents over random schemas, in a format unlike the fine-tuning prompt:

        tables: farms(id, name, city, area) ; animals(id, code, weight, farm_id)
        Q: how many farms have city Lima?
        SQL: SELECT COUNT(*) FROM farms WHERE city = 'Lima'

    (half give the schema as CREATE TABLE statements instead of the `tables:` line.)
    """
    docs = []
    while len(docs) < n:
        db = random_database(rng)
        populate(db, rng)
        if rng.random() < 0.5:  # half with DDL, so copying names out of CREATE TABLE text is learned too
            header = db.ddl()
        else:
            header = "tables: " + " ; ".join(f"{t.name}({', '.join(['id'] + [c.name for c in t.columns])})" for t in db.tables)
        pairs = questions(db, rng)
        rng.shuffle(pairs)
        lines = [header]
        for question, sql in pairs[:pairs_per_doc]:
            q = question[0].lower() + question[1:] if rng.random() < 0.5 else question
            lines += [f"Q: {q}", f"SQL: {sql}"]
        docs.append("\n".join(lines))
    return docs


def digest(splits: dict[str, list[dict]]) -> str:
    """sha256 of the question/answer text of every split: a fingerprint for the adapter card."""
    h = hashlib.sha256()
    for name in sorted(splits):
        for ex in splits[name]:
            h.update(f"{name}\t{ex['question']}\t{ex['answer']}\n".encode())
    return h.hexdigest()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write <split>.jsonl here")
    args = ap.parse_args(argv)
    splits = bundled_sql_splits(args.seed)
    for name, rows in splits.items():
        print(f"{name:12s} {len(rows):6d} examples, {len({r['answer'] for r in rows})} distinct queries")
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print("sha256", digest(splits))


if __name__ == "__main__":
    main()
