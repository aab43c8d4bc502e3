#!/usr/bin/env python3
"""Synthetic SCL 2017 flights in the RAW 18-column layout (bench/README.md).

    gen_scl.py --rows 1000000 --seed 42 --out /tmp/scl_1m.csv [--label]
              [--real data/scl_flights_2017.csv]

Columns (the original challenge file's layout):
    Fecha-I,Vlo-I,Ori-I,Des-I,Emp-I,Fecha-O,Vlo-O,Ori-O,Des-O,Emp-O,
    DIA,MES,AÑO,DIANOM,TIPOVUELO,OPERA,SIGLAORI,SIGLADES
and with --label a last column atraso_15 (0/1).

The model's columns follow the real data: each row draws its (OPERA, TIPOVUELO,
MES) cell from the joint frequencies of the real file (68,206 rows, columns
split,OPERA,TIPOVUELO,MES,atraso_15), and atraso_15 from that cell's real delay
rate. The other columns are made consistent with them: Fecha-I is a scheduled
time in that month of 2017 (5-minute slots), Fecha-O = Fecha-I + a delay that is
over 15 minutes exactly when atraso_15 = 1, DIA/MES/AÑO/DIANOM describe Fecha-I
(Spanish weekday names without accents, as in the original), Ori = SCEL /
Santiago, Des/SIGLADES a destination the airline plausibly serves for that flight
type, Emp an ICAO airline code, Vlo a flight number.

Deterministic: the same --seed, --rows and real file give the same bytes. Rows
are made in chunks of CHUNK_ROWS (each chunk seeded from (seed, chunk index)),
vectorised with numpy and written with polars, so memory stays at one chunk
(roughly 0.5 GB) and 10M rows (about 1.2 GB) take well under a minute on one
core.
"""
from __future__ import annotations

import argparse
import calendar
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

CHUNK_ROWS = 1_000_000  # part of the output's definition: changing it changes the bytes
YEAR = 2017
HEADER = [
    "Fecha-I", "Vlo-I", "Ori-I", "Des-I", "Emp-I",
    "Fecha-O", "Vlo-O", "Ori-O", "Des-O", "Emp-O",
    "DIA", "MES", "AÑO", "DIANOM", "TIPOVUELO", "OPERA", "SIGLAORI", "SIGLADES",
]
DIANOM = ["Lunes", "Martes", "Miercoles", "Jueves", "Viernes", "Sabado", "Domingo"]

# Destinations (ICAO code, city as the original file spells it).
DOMESTIC = [
    ("SCFA", "Antofagasta"), ("SCCF", "Calama"), ("SCTE", "Puerto Montt"),
    ("SCDA", "Iquique"), ("SCIE", "Concepcion"), ("SCSE", "La Serena"),
    ("SCAR", "Arica"), ("SCCI", "Punta Arenas"), ("SCQP", "Temuco"),
    ("SCAT", "Copiapo"), ("SCBA", "Balmaceda"), ("SCVD", "Valdivia"),
    ("SCJO", "Osorno"), ("SCPQ", "Castro (Chiloe)"), ("SCIP", "Isla de Pascua"),
]
INTL = {
    "SAEZ": "Buenos Aires", "SABE": "Buenos Aires", "SACO": "Cordoba",
    "SAME": "Mendoza", "SAAR": "Rosario", "SAZS": "Bariloche",
    "SPJC": "Lima", "SBGR": "Sao Paulo", "SBGL": "Rio de Janeiro",
    "SBFL": "Florianapolis", "SUMU": "Montevideo", "SGAS": "Asuncion",
    "SLVR": "Santa Cruz", "SEGU": "Guayaquil", "SKBO": "Bogota",
    "MPTO": "Ciudad de Panama", "MROC": "San Jose", "MMMX": "Ciudad de Mexico",
    "MMUN": "Cancun", "MDPC": "Punta Cana", "KMIA": "Miami",
    "KDFW": "Dallas", "KATL": "Atlanta", "KIAH": "Houston",
    "KJFK": "Nueva York", "CYYZ": "Toronto", "LEMD": "Madrid",
    "LFPG": "Paris", "LIRF": "Roma", "EGLL": "Londres", "EHAM": "Amsterdam",
    "YSSY": "Sydney", "NZAA": "Auckland N.Z.",
}
# OPERA -> (ICAO codes flown as, flight-number range, international destinations,
# whether domestic flights exist). Unknown OPERA values in the real file fall
# back to a generic entry, so any real file works.
AIRLINES = {
    "Grupo LATAM": (["LAN", "LXP", "LPE", "TAM"], (1, 2999),
                    ["SPJC", "SAEZ", "SBGR", "KMIA", "LEMD", "SAME", "SBGL", "SKBO",
                     "NZAA", "YSSY", "MMUN", "SEGU", "SLVR", "SUMU", "SACO", "KJFK",
                     "MDPC", "SGAS", "SAAR", "LFPG"], True),
    "Sky Airline": (["SKU"], (1, 999),
                    ["SPJC", "SAME", "SBGL", "SBFL", "SUMU", "SAEZ"], True),
    "Aerolineas Argentinas": (["ARG"], (1200, 1999), ["SABE", "SAEZ", "SACO", "SAME"], False),
    "Aeromexico": (["AMX"], (1, 99), ["MMMX"], False),
    "Air Canada": (["ACA"], (90, 99), ["CYYZ"], False),
    "Air France": (["AFR"], (400, 419), ["LFPG"], False),
    "Alitalia": (["AZA"], (680, 689), ["LIRF"], False),
    "American Airlines": (["AAL"], (900, 999), ["KMIA", "KDFW"], False),
    "Austral": (["AUT"], (2500, 2599), ["SABE"], False),
    "Avianca": (["AVA", "TPU"], (1, 999), ["SKBO", "SPJC", "SEGU"], False),
    "British Airways": (["BAW"], (250, 259), ["EGLL"], False),
    "Copa Air": (["CMP"], (100, 499), ["MPTO"], False),
    "Delta Air": (["DAL"], (140, 149), ["KATL"], False),
    "Gol Trans": (["GLO"], (7400, 7499), ["SBGR", "SBGL"], False),
    "Iberia": (["IBE"], (6830, 6839), ["LEMD"], False),
    "JetSmart SPA": (["JAT"], (100, 899), ["SAME"], True),
    "K.L.M.": (["KLM"], (700, 709), ["EHAM"], False),
    "Lacsa": (["LRC"], (620, 629), ["MROC"], False),
    "Latin American Wings": (["LAW", "DSM"], (1, 999), ["SAME", "SAZS", "SPJC"], True),
    "Oceanair Linhas Aereas": (["ONE"], (6340, 6349), ["SBGR"], False),
    "Plus Ultra Lineas Aereas": (["PUE"], (70, 79), ["LEMD"], False),
    "Qantas Airways": (["QFU"], (27, 28), ["YSSY"], False),
    "United Airlines": (["UAL"], (840, 849), ["KIAH"], False),
}
GENERIC = (["XXX"], (1, 999), ["SPJC", "SAEZ", "SBGR"], True)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


class Tables:
    """Everything drawn per row, as flat numpy arrays indexed by small ints."""

    def __init__(self, real_csv: Path):
        real = pl.read_csv(
            real_csv,
            columns=["OPERA", "TIPOVUELO", "MES", "atraso_15"],
            schema_overrides={"OPERA": pl.String, "TIPOVUELO": pl.String,
                              "MES": pl.Int64, "atraso_15": pl.Int64},
        )
        if real.height == 0:
            raise SystemExit(f"gen_scl: {real_csv} has no rows")
        bad = real.filter(~pl.col("MES").is_between(1, 12) | ~pl.col("TIPOVUELO").is_in(["I", "N"]))
        if bad.height:
            raise SystemExit(f"gen_scl: {real_csv}: {bad.height} rows with MES outside 1..12 or TIPOVUELO not I/N")
        cells = (
            real.group_by(["OPERA", "TIPOVUELO", "MES"])
            .agg(pl.len().alias("n"), pl.col("atraso_15").mean().alias("rate"))
            .sort(["OPERA", "TIPOVUELO", "MES"])  # deterministic order
        )
        self.opera = sorted(set(cells["OPERA"].to_list()))
        opera_ix = {o: i for i, o in enumerate(self.opera)}
        self.cell_opera = np.array([opera_ix[o] for o in cells["OPERA"]], dtype=np.int64)
        self.cell_tipo = np.array([0 if t == "I" else 1 for t in cells["TIPOVUELO"]], dtype=np.int64)
        self.cell_mes = cells["MES"].to_numpy().astype(np.int64)
        self.cell_rate = cells["rate"].to_numpy().astype(np.float64)
        cum = np.cumsum(cells["n"].to_numpy().astype(np.float64))
        self.cell_cum = cum / cum[-1]

        # Destination pools per (airline, type) group = airline*2 + tipo.
        self.dest_codes = [c for c, _ in DOMESTIC] + sorted(INTL)
        self.dest_city = [dict(DOMESTIC).get(c) or INTL[c] for c in self.dest_codes]
        dest_ix = {c: i for i, c in enumerate(self.dest_codes)}
        domestic_ix = [dest_ix[c] for c, _ in DOMESTIC]
        flat, off, size = [], [], []
        self.emp_codes: list[str] = []
        emp_off, emp_size, vlo_lo, vlo_span = [], [], [], []
        for o in self.opera:
            codes, (lo, hi), intl, _dom = AIRLINES.get(o, GENERIC)
            for tipo in (0, 1):
                pool = [dest_ix[c] for c in intl] if tipo == 0 else domestic_ix
                off.append(len(flat))
                size.append(len(pool))
                flat.extend(pool)
            emp_off.append(len(self.emp_codes))
            emp_size.append(len(codes))
            self.emp_codes.extend(codes)
            vlo_lo.append(lo)
            vlo_span.append(hi - lo + 1)
        self.dest_flat = np.array(flat, dtype=np.int64)
        self.dest_off = np.array(off, dtype=np.int64)
        self.dest_size = np.array(size, dtype=np.int64)
        self.emp_off = np.array(emp_off, dtype=np.int64)
        self.emp_size = np.array(emp_size, dtype=np.int64)
        self.vlo_lo = np.array(vlo_lo, dtype=np.int64)
        self.vlo_span = np.array(vlo_span, dtype=np.int64)

        month_start = np.array(
            [np.datetime64(f"{YEAR}-{m:02d}-01", "D").astype(np.int64) for m in range(1, 13)], dtype=np.int64
        )
        self.month_start = np.concatenate([[0], month_start])  # index by MES 1..12
        self.month_days = np.array([0] + [calendar.monthrange(YEAR, m)[1] for m in range(1, 13)], dtype=np.int64)

        # Series to gather strings from (built once).
        self.s_opera = pl.Series("OPERA", self.opera, dtype=pl.String)
        self.s_tipo = pl.Series("TIPOVUELO", ["I", "N"], dtype=pl.String)
        self.s_dest = pl.Series("Des", self.dest_codes, dtype=pl.String)
        self.s_city = pl.Series("SIGLADES", self.dest_city, dtype=pl.String)
        self.s_emp = pl.Series("Emp", self.emp_codes, dtype=pl.String)
        self.s_dianom = pl.Series("DIANOM", DIANOM, dtype=pl.String)


def uniform_index(rng: np.random.Generator, n: int, size: np.ndarray) -> np.ndarray:
    """An index in [0, size[i]) per row (size is per row)."""
    return (rng.random(n) * size).astype(np.int64)


def make_chunk(t: Tables, rng: np.random.Generator, n: int, label: bool) -> pl.DataFrame:
    cell = np.searchsorted(t.cell_cum, rng.random(n), side="right")
    cell = np.minimum(cell, len(t.cell_cum) - 1)
    opera = t.cell_opera[cell]
    tipo = t.cell_tipo[cell]
    mes = t.cell_mes[cell]
    late = rng.random(n) < t.cell_rate[cell]

    group = opera * 2 + tipo
    dest = t.dest_flat[t.dest_off[group] + uniform_index(rng, n, t.dest_size[group])]
    emp = t.emp_off[opera] + uniform_index(rng, n, t.emp_size[opera])
    vlo = t.vlo_lo[opera] + uniform_index(rng, n, t.vlo_span[opera])

    day = 1 + uniform_index(rng, n, t.month_days[mes])
    days = t.month_start[mes] + day - 1  # days since 1970-01-01
    slot = rng.integers(6 * 12, 24 * 12, n)  # 06:00 .. 23:55, 5-minute slots
    # on time: -5..15 minutes; late: 16 + exponential (mean 25), capped at 6 h
    delay = np.where(
        late,
        16 + np.minimum(rng.exponential(25.0, n).astype(np.int64), 344),
        rng.integers(-5, 16, n),
    )
    sched_s = days * 86400 + slot * 300
    oper_s = sched_s + delay * 60
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0

    fecha_i = pl.Series("Fecha-I", sched_s * 1000, dtype=pl.Int64).cast(pl.Datetime("ms"))
    fecha_o = pl.Series("Fecha-O", oper_s * 1000, dtype=pl.Int64).cast(pl.Datetime("ms"))
    des = t.s_dest.gather(dest)
    emp_s = t.s_emp.gather(emp)
    vlo_s = pl.Series("Vlo-I", vlo, dtype=pl.Int64)
    cols = [
        fecha_i,
        vlo_s,
        pl.repeat("SCEL", n, eager=True).alias("Ori-I"),
        des.alias("Des-I"),
        emp_s.alias("Emp-I"),
        fecha_o,
        vlo_s.alias("Vlo-O"),
        pl.repeat("SCEL", n, eager=True).alias("Ori-O"),
        des.alias("Des-O"),
        emp_s.alias("Emp-O"),
        pl.Series("DIA", day, dtype=pl.Int64),
        pl.Series("MES", mes, dtype=pl.Int64),
        pl.repeat(YEAR, n, eager=True, dtype=pl.Int64).alias("AÑO"),
        t.s_dianom.gather(weekday).alias("DIANOM"),
        t.s_tipo.gather(tipo).alias("TIPOVUELO"),
        t.s_opera.gather(opera).alias("OPERA"),
        pl.repeat("Santiago", n, eager=True).alias("SIGLAORI"),
        t.s_city.gather(dest).alias("SIGLADES"),
    ]
    if label:
        cols.append(pl.Series("atraso_15", late.astype(np.int64), dtype=pl.Int64))
    return pl.DataFrame(cols)


def generate(real: Path, rows: int, seed: int, out: Path, label: bool, quiet: bool = False) -> None:
    t0 = time.perf_counter()
    tables = Tables(real)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            done, chunk_ix = 0, 0
            if rows == 0:
                f.write((",".join(HEADER + (["atraso_15"] if label else [])) + "\n").encode())
            while done < rows:
                n = min(CHUNK_ROWS, rows - done)
                rng = np.random.default_rng([seed, chunk_ix])
                df = make_chunk(tables, rng, n, label)
                df.write_csv(f, include_header=chunk_ix == 0, datetime_format="%Y-%m-%d %H:%M:%S")
                done += n
                chunk_ix += 1
        os.replace(tmp, out)  # readers never see a half-written file
    finally:
        if tmp.exists():
            tmp.unlink()
    if not quiet:
        size = out.stat().st_size
        secs = time.perf_counter() - t0
        print(
            f"gen_scl: {rows} rows, {size} bytes ({size / max(rows, 1):.1f} B/row) -> {out} in {secs:.2f} s",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, required=True, help="data rows to write (header excluded)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--out", type=Path, required=True, help="output CSV path (written atomically)")
    p.add_argument("--label", action="store_true", help="append the atraso_15 column (0/1)")
    p.add_argument(
        "--real",
        type=Path,
        default=repo_root() / "data" / "scl_flights_2017.csv",
        help="real SCL 2017 file to draw frequencies from (default: data/scl_flights_2017.csv in the repo)",
    )
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.rows < 0:
        p.error("--rows must be >= 0")
    if not a.real.is_file():
        p.error(f"real data file not found: {a.real} (pass --real PATH)")
    generate(a.real, a.rows, a.seed, a.out, a.label, a.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
