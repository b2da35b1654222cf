"""Realistic demo cases (`sbt demo seed`), made by running the real workflow through the service layer.

Every case is created and moved along by the same service functions the API calls, so each has a true
history, change-feed entries and CLI audit events. Proportions follow DOMAIN.md: categories as in
Pilkada 2020, statuses as Kemendagri reported for Pilkada 2024 in December 2024.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.agencies.models import Agency
from app.audit.chain import EventDraft, append_events
from app.clock import today_jakarta
from app.db import begin_write
from app.reference import load_provinces
from app.violations import service
from app.violations.conditions import JSON_MEDIA_TYPE, MERGE_PATCH_MEDIA_TYPE, RawBody, etag
from app.violations.documents import encode_json
from app.violations.schemas import ViolationCreate
from app.violations.service import Actor, FeedChange
from app.violations.workflow import (
    ActionName,
    Category,
    ElectionStage,
    ElectionType,
    PositionType,
    Sanction,
    Status,
)

EventFactory = Callable[..., EventDraft]

# Pilkada 2024, December 2024: 667 awaiting verification (split here between not yet taken up and under
# verification), 436 awaiting the PPK (a few of them already blocked), 24 not proven, 27 cancelled,
# 60 rejected, 19 sanctioned; "ASN left/retired/resigned" had no published count, so a few.
STATUS_WEIGHTS: dict[Status, float] = {
    Status.REPORTED: 400, Status.UNDER_VERIFICATION: 267, Status.RECOMMENDED: 400, Status.DATA_BLOCKED: 36,
    Status.NOT_PROVEN: 24, Status.CANCELLED: 27, Status.REJECTED: 60, Status.SANCTIONED: 19,
    Status.SUBJECT_DEPARTED: 8,
}
# Pilkada 2020's top four forms; the rest share what is left.
_TOP_CATEGORIES = {Category.SOCIAL_MEDIA_ENGAGEMENT: 30.4, Category.PARTISAN_EVENT: 22.4,
                   Category.PARTISAN_PHOTO: 12.6, Category.CAMPAIGN_ATTENDANCE: 10.9}
CATEGORY_WEIGHTS: dict[Category, float] = {
    **_TOP_CATEGORIES,
    **{c: (100 - sum(_TOP_CATEGORIES.values())) / (len(Category) - len(_TOP_CATEGORIES))
       for c in Category if c not in _TOP_CATEGORIES},
}

MALE_NAMES = ["Ahmad", "Budi", "Agus", "Slamet", "Joko", "Hendra", "Rudi", "Dedi", "Andi", "Yusuf", "Bambang",
              "Eko", "Wahyu", "Hadi", "Arif", "Iwan", "Teguh", "Rahmat", "Syamsul", "Fajar", "Irfan", "Dimas"]
FEMALE_NAMES = ["Siti", "Sri", "Dewi", "Ratna", "Rina", "Nur", "Wulan", "Indah", "Yuliana", "Fitri", "Ani",
                "Putri", "Endang", "Kartini", "Novita", "Retno", "Evi", "Dian", "Fatimah", "Intan"]
FAMILY_NAMES = ["Santoso", "Wijaya", "Hidayat", "Saputra", "Pratama", "Setiawan", "Kurniawan", "Nugroho",
                "Lubis", "Siregar", "Nasution", "Harahap", "Simanjuntak", "Sinaga", "Rahman", "Hasibuan",
                "Tanjung", "Gunawan", "Susanto", "Purnomo", "Rahayu", "Handayani", "Wahyuni", "Kusumawati"]
DEGREES = ["", "", "", ", S.Pd.", ", S.E.", ", S.Sos.", ", S.H.", ", S.Kom.", ", M.Si.", ", S.Kep."]

# Kemendagri codes of regencies (01-69) and cities (71-99) where cases are placed.
LOCAL_GOVERNMENTS = [
    ("11.71", "Kota Banda Aceh"), ("12.07", "Kabupaten Deli Serdang"), ("12.71", "Kota Medan"),
    ("13.71", "Kota Padang"), ("14.71", "Kota Pekanbaru"), ("16.71", "Kota Palembang"),
    ("18.71", "Kota Bandar Lampung"), ("32.01", "Kabupaten Bogor"), ("32.04", "Kabupaten Bandung"),
    ("32.15", "Kabupaten Karawang"), ("32.16", "Kabupaten Bekasi"), ("32.73", "Kota Bandung"),
    ("32.75", "Kota Bekasi"), ("32.76", "Kota Depok"), ("33.02", "Kabupaten Banyumas"),
    ("33.72", "Kota Surakarta"), ("33.74", "Kota Semarang"), ("34.04", "Kabupaten Sleman"),
    ("35.07", "Kabupaten Malang"), ("35.15", "Kabupaten Sidoarjo"), ("35.73", "Kota Malang"),
    ("35.78", "Kota Surabaya"), ("36.03", "Kabupaten Tangerang"), ("36.71", "Kota Tangerang"),
    ("51.71", "Kota Denpasar"), ("52.71", "Kota Mataram"), ("53.71", "Kota Kupang"),
    ("61.71", "Kota Pontianak"), ("63.71", "Kota Banjarmasin"), ("64.72", "Kota Samarinda"),
    ("71.71", "Kota Manado"), ("72.71", "Kota Palu"), ("73.06", "Kabupaten Gowa"),
    ("73.71", "Kota Makassar"), ("74.71", "Kota Kendari"), ("75.71", "Kota Gorontalo"),
    ("81.71", "Kota Ambon"), ("82.71", "Kota Ternate"), ("91.71", "Kota Jayapura"),
]
# Vertical (central) offices: their PPK is a minister or agency head, so BKN records the follow-up.
CENTRAL_OFFICES = [
    ("31", "Kementerian Agama"),
    ("35", "Kantor Wilayah Kementerian Agama Provinsi Jawa Timur"),
    ("32", "Kantor Regional III Badan Kepegawaian Negara"),
]
POSITIONS: dict[PositionType, list[str]] = {
    PositionType.JPT: ["Sekretaris Daerah", "Kepala Dinas Pendidikan",
                       "Kepala Badan Perencanaan Pembangunan Daerah",
                       "Asisten Pemerintahan dan Kesejahteraan Rakyat"],
    PositionType.ADMINISTRATOR: ["Kepala Bagian Umum", "Sekretaris Dinas Kesehatan",
                                 "Kepala Bidang Pembinaan SMP"],
    PositionType.PENGAWAS: ["Kepala Subbagian Keuangan", "Kepala Seksi Pelayanan",
                            "Kepala Subbagian Kepegawaian"],
    PositionType.FUNGSIONAL: ["Guru Ahli Pertama", "Guru Ahli Muda", "Perawat Terampil", "Penyuluh Pertanian",
                              "Analis Kebijakan Ahli Muda", "Bidan Ahli Pertama"],
    PositionType.PELAKSANA: ["Pengadministrasi Umum", "Pengelola Keuangan", "Pengadministrasi Kepegawaian"],
    PositionType.KEPALA_WILAYAH: ["Camat", "Lurah", "Sekretaris Kecamatan"],
}
POSITION_WEIGHTS = {PositionType.JPT: 5, PositionType.ADMINISTRATOR: 12, PositionType.PENGAWAS: 13,
                    PositionType.FUNGSIONAL: 38, PositionType.PELAKSANA: 20, PositionType.KEPALA_WILAYAH: 12}
DESCRIPTIONS: dict[Category, str] = {
    Category.CAMPAIGN_PROPS: "Memasang spanduk bergambar pasangan calon nomor urut {n} di pagar kantor.",
    Category.ONLINE_CAMPAIGNING: "Mengunggah video ajakan memilih pasangan calon nomor urut {n} di akun "
                                 "{p} pribadi.",
    Category.CANDIDACY_WITHOUT_LEAVE: "Mendaftar sebagai bakal calon ke partai politik tanpa mengajukan cuti "
                                      "di luar tanggungan negara.",
    Category.CAMPAIGN_ATTENDANCE: "Hadir dalam deklarasi pasangan calon nomor urut {n} dan ikut mengacungkan "
                                  "simbol jari.",
    Category.PARTY_MEMBERSHIP: "Tercatat sebagai pengurus partai politik tingkat kecamatan di aplikasi "
                               "Sipol.",
    Category.SOCIAL_MEDIA_ENGAGEMENT: "Memberikan tanda suka dan membagikan unggahan kampanye pasangan calon "
                                      "nomor urut {n} di {p}.",
    Category.PARTISAN_PHOTO: "Berfoto bersama pasangan calon nomor urut {n} dengan mengacungkan jari "
                             "sebagai simbol dukungan; foto beredar di {p}.",
    Category.PARTISAN_EVENT: "Mengadakan pertemuan dengan warga dan membagikan sembako disertai ajakan "
                             "memilih pasangan calon nomor urut {n}.",
    Category.CAMPAIGN_TEAM_BEFORE_CANDIDACY: "Menjadi anggota tim pemenangan bakal calon sebelum penetapan "
                                             "pasangan calon.",
    Category.CAMPAIGN_TEAM_AFTER_CANDIDACY: "Terdaftar sebagai anggota tim kampanye pasangan calon nomor "
                                            "urut {n}.",
    Category.INDEPENDENT_CANDIDATE_SUPPORT: "Mengumpulkan fotokopi KTP warga untuk dukungan bakal calon "
                                            "perseorangan.",
    Category.PARTISAN_DECISION: "Menerbitkan surat edaran yang menguntungkan pasangan calon nomor urut {n} "
                                "menjelang masa tenang.",
    Category.OTHER: "Menggunakan fasilitas kendaraan dinas untuk mengantar tim kampanye pasangan calon "
                    "nomor urut {n}.",
}
EVIDENCE_HOSTS = ["www.facebook.com/share/p", "www.instagram.com/p", "www.tiktok.com/@warga/video"]
EVIDENCE_FILES = ["form-a-hasil-pengawasan.pdf", "berita-acara-klarifikasi.pdf", "foto-kegiatan.jpg"]
PLATFORMS = ["Facebook", "Instagram", "TikTok", "WhatsApp", "X (Twitter)"]
# (first day, last day) of each stage; the official schedules of Pemilu 2024 and Pilkada 2024.
STAGES: dict[ElectionType, dict[ElectionStage, tuple[date, date]]] = {
    ElectionType.PEMILU: {
        ElectionStage.PRE_CAMPAIGN: (date(2023, 10, 19), date(2023, 11, 27)),
        ElectionStage.CAMPAIGN: (date(2023, 11, 28), date(2024, 2, 10)),
        ElectionStage.QUIET_PERIOD: (date(2024, 2, 11), date(2024, 2, 13)),
        ElectionStage.VOTING: (date(2024, 2, 14), date(2024, 2, 14)),
        ElectionStage.POST_VOTING: (date(2024, 2, 15), date(2024, 3, 20)),
    },
    ElectionType.PILKADA: {
        ElectionStage.PRE_CAMPAIGN: (date(2024, 8, 27), date(2024, 9, 24)),
        ElectionStage.CAMPAIGN: (date(2024, 9, 25), date(2024, 11, 23)),
        ElectionStage.QUIET_PERIOD: (date(2024, 11, 24), date(2024, 11, 26)),
        ElectionStage.VOTING: (date(2024, 11, 27), date(2024, 11, 27)),
        ElectionStage.POST_VOTING: (date(2024, 11, 28), date(2024, 12, 31)),
    },
}
STAGE_WEIGHTS = {ElectionStage.PRE_CAMPAIGN: 15, ElectionStage.CAMPAIGN: 65, ElectionStage.QUIET_PERIOD: 8,
                 ElectionStage.VOTING: 5, ElectionStage.POST_VOTING: 7}
VERIFIER, ENFORCER, REGIONAL_FOLLOW_UP, CENTRAL_FOLLOW_UP = "BKN", "BKN", "KEMENDAGRI", "BKN"


def _weighted(rng: random.Random, weights: Mapping[Any, float]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _day_between(rng: random.Random, first: date, last: date) -> date:
    return first + timedelta(days=rng.randint(0, (last - first).days))


@dataclass
class _Case:
    reporter: str
    body: dict[str, Any]
    status: Status
    amend: bool
    regional: bool


class CaseFactory:
    """Draws one plausible case at a time from a seeded random generator."""

    def __init__(self, rng: random.Random, today: date) -> None:
        self.rng = rng
        self.today = today
        self.places = [(code, f"Pemerintah {name}") for code, name in LOCAL_GOVERNMENTS]
        self.places += [(code, f"Pemerintah Provinsi {name}") for code, name in load_provinces().items()]

    def nip(self, female: bool, pppk: bool) -> str:
        rng = self.rng
        born = _day_between(rng, date(1965, 1, 1), date(1996, 12, 31))
        if pppk:  # NI PPPK: 18 digits, layout unconfirmed; appointments began in 2019
            appointed = (rng.randint(2019, self.today.year - 1), rng.randint(1, 12))
        else:
            appointed = (min(born.year + rng.randint(21, 32), self.today.year - 1), rng.randint(1, 12))
        year, month = appointed
        return f"{born:%Y%m%d}{year:04d}{month:02d}{2 if female else 1}{rng.randint(1, 999):03d}"

    def subject(self) -> tuple[dict[str, Any], bool]:
        """A civil servant, and whether a regional government employs them."""
        rng = self.rng
        female = rng.random() < 0.42
        pppk = rng.random() < 0.15
        first = rng.choice(FEMALE_NAMES if female else MALE_NAMES)
        name = f"{first} {rng.choice(FAMILY_NAMES)}{rng.choice(DEGREES)}"
        position_type = _weighted(rng, POSITION_WEIGHTS)
        position = rng.choice(POSITIONS[position_type])
        regional = rng.random() < 0.95
        if regional:  # the instansi is the regional government itself, as in SPEC's example
            region_code, institution = rng.choice(self.places)
        else:
            region_code, institution = rng.choice(CENTRAL_OFFICES)
        return {"nip": self.nip(female, pppk), "name": name, "employment_type": "PPPK" if pppk else "PNS",
                "position": position, "position_type": position_type.value,
                "institution": institution, "region_code": region_code}, regional

    def evidence(self) -> list[dict[str, Any]]:
        rng = self.rng
        items: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.6:
                token = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=11))
                host = rng.choice(EVIDENCE_HOSTS)
                items.append({"kind": "url", "uri": f"https://{host}/{token}",
                              "description": "tangkapan layar unggahan"})
            else:
                digest = hashlib.sha256(rng.randbytes(32)).hexdigest()
                items.append({"kind": "document", "name": rng.choice(EVIDENCE_FILES), "sha256": digest})
        return items

    def case(self) -> _Case:
        rng = self.rng
        election_type = ElectionType.PILKADA if rng.random() < 0.75 else ElectionType.PEMILU
        stage = _weighted(rng, STAGE_WEIGHTS)
        category = _weighted(rng, CATEGORY_WEIGHTS)
        subject, regional = self.subject()
        body = {
            "subject": subject,
            "election": {"type": election_type.value, "year": 2024, "stage": stage.value},
            "category": category.value,
            "description": DESCRIPTIONS[category].format(n=rng.randint(1, 4), p=rng.choice(PLATFORMS)),
            "occurred_on": _day_between(rng, *STAGES[election_type][stage]).isoformat(),
            "source": "finding" if rng.random() < 0.8 else "public_report",
            "evidence": self.evidence(),
        }
        reporter = "BAWASLU" if rng.random() < 0.9 else rng.choice(["KEMENDAGRI", "KEMENPANRB", "BKN"])
        return _Case(reporter, body, _weighted(rng, STATUS_WEIGHTS), rng.random() < 0.1, regional)

    def steps(self, case: _Case, follow_up_days: int) -> list[tuple[str, dict[str, Any]]]:
        """The (agency, action body) steps that take a new case to its target status."""
        rng, today, target = self.rng, self.today, case.status
        start = (VERIFIER, {"action": ActionName.START_VERIFICATION.value})

        def recommend(issued_on: date) -> tuple[str, dict[str, Any]]:
            sanction = rng.choice([s.value for s in Sanction])
            number = f"{rng.randint(100, 999)}/R/KN.{rng.randint(1, 12):02d}/{issued_on.year}"
            return VERIFIER, {"action": ActionName.RECOMMEND.value, "recommendation": {
                "sanction": sanction, "number": number, "issued_on": issued_on.isoformat()}}

        def reason(text: str) -> dict[str, str]:
            return {"reason": text}

        if target is Status.REPORTED:
            return []
        if target is Status.UNDER_VERIFICATION:
            return [start]
        if target is Status.CANCELLED:
            return [(case.reporter, {"action": ActionName.CANCEL.value,
                                     **reason("laporan ganda dengan temuan Bawaslu kabupaten")})]
        if target in (Status.NOT_PROVEN, Status.REJECTED):
            why = "bukti tidak cukup" if target is Status.NOT_PROVEN else "bukan ASN / di luar kewenangan"
            dismiss = {"action": ActionName.DISMISS.value, "outcome": target.value, **reason(why)}
            return [start, (VERIFIER, dismiss)]
        if target is Status.SUBJECT_DEPARTED:
            return [start, (VERIFIER, {"action": ActionName.MARK_SUBJECT_DEPARTED.value,
                                       **reason("ASN telah pensiun")})]
        if target is Status.RECOMMENDED:
            return [start, recommend(today - timedelta(days=rng.randint(0, 40)))]
        if target is Status.DATA_BLOCKED:
            issued = today - timedelta(days=rng.randint(follow_up_days + 1, 90))
            return [start, recommend(issued), (ENFORCER, {"action": ActionName.BLOCK_DATA.value})]
        # SANCTIONED
        issued = today - timedelta(days=rng.randint(20, 120))
        decided = min(issued + timedelta(days=rng.randint(3, 20)), today)
        follow_up = {"sanction": rng.choice([s.value for s in Sanction]),
                     "decree_number": f"800.1.6.4/{rng.randint(100, 9999)}/BKPSDM",
                     "decided_on": decided.isoformat()}
        recorder = REGIONAL_FOLLOW_UP if case.regional else CENTRAL_FOLLOW_UP
        return [start, recommend(issued),
                (recorder, {"action": ActionName.RECORD_FOLLOW_UP.value, "follow_up": follow_up})]


def _actors(session: Session) -> dict[str, Actor]:
    return {a.code: Actor(a.code, frozenset(a.roles)) for a in session.scalars(select(Agency))}


def seed_case(session: Session, factory: CaseFactory, *, follow_up_days: int, event: EventFactory) -> Status:
    """Create one case and walk it to its target status in one transaction, with one CLI audit event per
    step and the feed entries positioned under the chain-head lock, just as the request edge does."""
    actors = _actors(session)
    case = factory.case()
    drafts: list[EventDraft] = []
    changes: list[FeedChange] = []

    def audited(action: str, agency: str, violation_id: uuid.UUID, detail: dict[str, Any],
                change: FeedChange | None) -> None:
        drafts.append(event(action, resource_type="violation", resource_ids=[str(violation_id)],
                            detail={**detail, "agency": agency, "demo": True}))
        if change is not None:
            changes.append(change)

    created = service.create_violation(session=session, data=ViolationCreate.model_validate(case.body),
                                       actor=actors[case.reporter])
    audited("violation.create", case.reporter, created.violation_id, created.detail, created.change)
    violation_id, version = str(created.violation_id), 1
    if case.amend:
        addendum = "Klarifikasi telah dilakukan oleh Bawaslu setempat."
        patch = {"description": f"{case.body['description']} {addendum}"}
        written = service.update_violation(session=session, violation_id=violation_id, if_match=etag(version),
                                           body=RawBody(MERGE_PATCH_MEDIA_TYPE, encode_json(patch)),
                                           actor=actors[case.reporter])
        audited("violation.update", case.reporter, written.violation_id, written.detail, written.change)
        version = written.document["version"]
    for agency, action in factory.steps(case, follow_up_days):
        written = service.apply_action(session=session, violation_id=violation_id, if_match=etag(version),
                                       body=RawBody(JSON_MEDIA_TYPE, encode_json(action)),
                                       actor=actors[agency], follow_up_days=follow_up_days)
        audited("violation.action", agency, written.violation_id, written.detail, written.change)
        version = written.document["version"]
    _, first_feed_seq = append_events(session, drafts, feed_entries=len(changes))
    for offset, change in enumerate(changes):
        change.write(session, first_feed_seq + offset)
    return case.status


def seed(
    sessions: Callable[[], Session], *, cases: int, follow_up_days: int, event: EventFactory,
    seed: int = 2024,
) -> Counter[str]:
    """Seed `cases` cases, one committed transaction each; returns how many ended in each status."""
    # Not for secrets: a seeded generator makes the same demo data every time.
    factory = CaseFactory(random.Random(seed), today_jakarta())  # noqa: S311
    reached: Counter[str] = Counter()
    for _ in range(cases):
        with sessions() as session:
            begin_write(session)
            reached[seed_case(session, factory, follow_up_days=follow_up_days, event=event).value] += 1
            session.commit()
    return reached
