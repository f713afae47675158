"""The MIMIC-III itemid table: every itemid the replay reads, with what it becomes.

Labels and units are those of ``d_items`` (chartevents, outputevents, inputevents) and
``d_labitems`` (labevents) in the MIMIC-III Clinical Database Demo v1.4, checked against the
``valueuom`` the rows actually carry. CareVue (itemids < 220000) and MetaVision (>= 220000)
chart the same thing under different itemids; both are listed. Selections follow the
MIT-LCP mimic-code concepts (vital signs, GCS, urine output, vasopressors); itemids that
are derived by CareVue itself (``Temperature C (calc)`` 677, ``Temperature F (calc)``
679) are left out so a reading is not sent twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from schemas.codes import Quantity
from schemas.context import Drug

_Q = Quantity

# chartevents -> vitals: itemid -> (quantity, unit of valuenum). d_items label in comments.
CHART_VITALS: Mapping[int, tuple[Quantity, str]] = MappingProxyType(
    {
        211: (_Q.HEART_RATE, "/min"),  # Heart Rate (CareVue, BPM)
        220045: (_Q.HEART_RATE, "/min"),  # Heart Rate (MetaVision, bpm)
        51: (_Q.ABP_SYS, "mm[Hg]"),  # Arterial BP [Systolic]
        8368: (_Q.ABP_DIA, "mm[Hg]"),  # Arterial BP [Diastolic]
        52: (_Q.ABP_MEAN, "mm[Hg]"),  # Arterial BP Mean
        6701: (_Q.ABP_SYS, "mm[Hg]"),  # Arterial BP #2 [Systolic]
        8555: (_Q.ABP_DIA, "mm[Hg]"),  # Arterial BP #2 [Diastolic]
        6702: (_Q.ABP_MEAN, "mm[Hg]"),  # Arterial BP Mean #2
        220050: (_Q.ABP_SYS, "mm[Hg]"),  # Arterial Blood Pressure systolic
        220051: (_Q.ABP_DIA, "mm[Hg]"),  # Arterial Blood Pressure diastolic
        220052: (_Q.ABP_MEAN, "mm[Hg]"),  # Arterial Blood Pressure mean
        # a second MetaVision arterial line (d_items category Routine Vital Signs, mmHg)
        225309: (_Q.ABP_SYS, "mm[Hg]"),  # ART BP Systolic
        225310: (_Q.ABP_DIA, "mm[Hg]"),  # ART BP Diastolic
        225312: (_Q.ABP_MEAN, "mm[Hg]"),  # ART BP mean
        455: (_Q.NBP_SYS, "mm[Hg]"),  # NBP [Systolic]
        8441: (_Q.NBP_DIA, "mm[Hg]"),  # NBP [Diastolic]
        456: (_Q.NBP_MEAN, "mm[Hg]"),  # NBP Mean
        442: (_Q.NBP_SYS, "mm[Hg]"),  # Manual BP [Systolic]
        8440: (_Q.NBP_DIA, "mm[Hg]"),  # Manual BP [Diastolic]
        443: (_Q.NBP_MEAN, "mm[Hg]"),  # Manual BP Mean(calc)
        220179: (_Q.NBP_SYS, "mm[Hg]"),  # Non Invasive Blood Pressure systolic
        220180: (_Q.NBP_DIA, "mm[Hg]"),  # Non Invasive Blood Pressure diastolic
        220181: (_Q.NBP_MEAN, "mm[Hg]"),  # Non Invasive Blood Pressure mean
        # MetaVision manual (cuff) pressures, per arm; CareVue's are 442/8440 above
        224167: (_Q.NBP_SYS, "mm[Hg]"),  # Manual Blood Pressure Systolic Left
        224643: (_Q.NBP_DIA, "mm[Hg]"),  # Manual Blood Pressure Diastolic Left
        227243: (_Q.NBP_SYS, "mm[Hg]"),  # Manual Blood Pressure Systolic Right
        227242: (_Q.NBP_DIA, "mm[Hg]"),  # Manual Blood Pressure Diastolic Right
        646: (_Q.SPO2, "%"),  # SpO2
        220277: (_Q.SPO2, "%"),  # O2 saturation pulseoxymetry
        618: (_Q.RESP_RATE, "/min"),  # Respiratory Rate (BPM)
        615: (_Q.RESP_RATE, "/min"),  # Resp Rate (Total)
        220210: (_Q.RESP_RATE, "/min"),  # Respiratory Rate (insp/min)
        224690: (_Q.RESP_RATE, "/min"),  # Respiratory Rate (Total)
        676: (_Q.TEMPERATURE, "Cel"),  # Temperature C (Deg. C)
        223762: (_Q.TEMPERATURE, "Cel"),  # Temperature Celsius
        678: (_Q.TEMPERATURE, "[degF]"),  # Temperature F (Deg. F)
        223761: (_Q.TEMPERATURE, "[degF]"),  # Temperature Fahrenheit
        113: (_Q.CVP, "mm[Hg]"),  # CVP
        220074: (_Q.CVP, "mm[Hg]"),  # Central Venous Pressure
    }
)

# chartevents -> labs topic: FiO2. 223835 Inspired O2 Fraction (charted in %, sometimes as
# a fraction), 190 FiO2 Set (a fraction; d_items unit "torr" is wrong), 3420 FIO2, 3422
# FIO2 [Meas]. Values <= 1 are fractions (mimic-code's FiO2 rule), larger ones percent.
CHART_FIO2: frozenset[int] = frozenset({223835, 190, 3420, 3422})

# chartevents -> context gcs. CareVue 198 GCS Total (components 184 Eye Opening, 723 Verbal
# Response, 454 Motor Response); MetaVision charts only the components 220739 GCS - Eye
# Opening, 223900 GCS - Verbal Response, 223901 GCS - Motor Response, summed per charttime.
GCS_TOTAL: frozenset[int] = frozenset({198})
GCS_EYE: frozenset[int] = frozenset({184, 220739})
GCS_VERBAL: frozenset[int] = frozenset({723, 223900})
GCS_MOTOR: frozenset[int] = frozenset({454, 223901})
# Verbal "values" that mean intubated, not a score: a verbal response cannot be assessed
# through an endotracheal tube, although both systems store valuenum 1. mimic-code's GCS
# concept (concepts/severityscores, pivoted gcs) recognises exactly these two strings.
GCS_VERBAL_INTUBATED: frozenset[str] = frozenset({"1.0 ET/Trach", "No Response-ETT"})

# chartevents -> context weight: 762 Admit Wt, 763 Daily Weight, 224639 Daily Weight,
# 226512 Admission Weight (Kg) in kg; 226531 Admission Weight (lbs.) in pounds.
WEIGHT_KG: frozenset[int] = frozenset({762, 763, 224639, 226512})
WEIGHT_LB: frozenset[int] = frozenset({226531})
KG_PER_LB = 0.45359237

# labevents -> labs: itemid -> (quantity, unit sent to normalise, valueuom in the data).
# d_labitems labels in comments. Base excess is charted in mEq/L = mmol/L (monovalent).
LAB_ITEMS: Mapping[int, tuple[Quantity, str, str]] = MappingProxyType(
    {
        50912: (_Q.CREATININE, "mg/dL", "mg/dL"),  # Creatinine
        50885: (_Q.BILIRUBIN_TOTAL, "mg/dL", "mg/dL"),  # Bilirubin, Total
        50883: (_Q.BILIRUBIN_DIRECT, "mg/dL", "mg/dL"),  # Bilirubin, Direct
        51265: (_Q.PLATELETS, "10*3/uL", "K/uL"),  # Platelet Count
        50813: (_Q.LACTATE, "mmol/L", "mmol/L"),  # Lactate
        50821: (_Q.PAO2, "mm[Hg]", "mm Hg"),  # pO2 (PaO2 only for an ART specimen)
        50818: (_Q.PACO2, "mm[Hg]", "mm Hg"),  # pCO2 (PaCO2 only for an ART specimen)
        50820: (_Q.PH, "[pH]", "units"),  # pH
        50816: (_Q.FIO2, "%", "%"),  # Oxygen (blood-gas FiO2, mimic-code's fio2)
        50882: (_Q.BICARBONATE, "mEq/L", "mEq/L"),  # Bicarbonate
        50802: (_Q.BASE_EXCESS, "mmol/L", "mEq/L"),  # Base Excess
        51006: (_Q.UREA_NITROGEN, "mg/dL", "mg/dL"),  # Urea Nitrogen
        50878: (_Q.AST, "U/L", "IU/L"),  # Asparate Aminotransferase (AST)
        50863: (_Q.ALKALINE_PHOSPHATASE, "U/L", "IU/L"),  # Alkaline Phosphatase
        50893: (_Q.CALCIUM, "mg/dL", "mg/dL"),  # Calcium, Total
        50902: (_Q.CHLORIDE, "mEq/L", "mEq/L"),  # Chloride
        50931: (_Q.GLUCOSE, "mg/dL", "mg/dL"),  # Glucose
        50809: (_Q.GLUCOSE, "mg/dL", "mg/dL"),  # Glucose (blood gas)
        50960: (_Q.MAGNESIUM, "mg/dL", "mg/dL"),  # Magnesium
        50970: (_Q.PHOSPHATE, "mg/dL", "mg/dL"),  # Phosphate
        50971: (_Q.POTASSIUM, "mEq/L", "mEq/L"),  # Potassium
        50822: (_Q.POTASSIUM, "mEq/L", "mEq/L"),  # Potassium, Whole Blood
        51002: (_Q.TROPONIN_I, "ng/mL", "ng/ml"),  # Troponin I
        51221: (_Q.HEMATOCRIT, "%", "%"),  # Hematocrit
        51222: (_Q.HEMOGLOBIN, "g/dL", "g/dL"),  # Hemoglobin
        51275: (_Q.PTT, "s", "sec"),  # PTT
        51301: (_Q.WBC, "10*3/uL", "K/uL"),  # White Blood Cells
        51300: (_Q.WBC, "10*3/uL", "K/uL"),  # WBC Count
        51214: (_Q.FIBRINOGEN, "mg/dL", "mg/dL"),  # Fibrinogen, Functional
    }
)

# labevents 50800 SPECIMEN TYPE (ART, VEN, MIX, CENTRAL VENOUS), charted for the same
# subject and charttime as the blood gas. d_labitems gives pO2/pCO2 only as "Blood": a
# venous or mixed-venous pO2 is not a PaO2 (mimic-code's blood gas concepts keep arterial
# gases only, by this specimen type). Other or missing types: kept, flagged unknown.
LAB_SPECIMEN_TYPE = 50800
ARTERIAL_ONLY: frozenset[int] = frozenset({50821, 50818})
ARTERIAL_SPECIMEN = "ART"

# outputevents -> context urine_output (mimic-code urine_output concept).
URINE_ITEMS: frozenset[int] = frozenset(
    {
        40055,  # Urine Out Foley
        43175,  # Urine .
        40069,  # Urine Out Void
        40094,  # Urine Out Condom Cath
        40715,  # Urine Out Suprapubic
        40473,  # Urine Out IleoConduit
        40085,  # Urine Out Incontinent
        40057,  # Urine Out Rt Nephrostomy
        40056,  # Urine Out Lt Nephrostomy
        40405,  # Urine Out Other
        40428,  # Urine Out Straight Cath
        40096,  # Urine Out Ureteral Stent #1
        40651,  # Urine Out Ureteral Stent #2
        40061,  # OR Out OR Urine
        40065,  # OR Out PACU Urine
        226559,  # Foley
        226560,  # Void
        226561,  # Condom Cath
        226584,  # Ileoconduit
        226563,  # Suprapubic
        226564,  # R Nephrostomy
        226565,  # L Nephrostomy
        226567,  # Straight Cath
        226557,  # R Ureteral Stent
        226558,  # L Ureteral Stent
        226627,  # OR Urine
        226631,  # PACU Urine
    }
)
# Bladder irrigation (MetaVision): what drains is irrigant plus urine. As in mimic-code's
# urine output concept, the irrigant put in at the same charttime is subtracted.
GU_IRRIGANT_OUT = 227489  # GU Irrigant/Urine Volume Out
GU_IRRIGANT_IN = 227488  # GU Irrigant Volume In

# inputevents_mv / inputevents_cv -> context infusion (and drug_dose for furosemide pushes).
# MetaVision rates come with rateuom (mcg/kg/min, mcg/min, units/hour, mg/hour); CareVue
# "-k" items are charted in mcgkgmin, the plain ones in mcgmin (mimic-code vasopressors).
DRUG_ITEMS: Mapping[int, Drug] = MappingProxyType(
    {
        221906: Drug.NOREPINEPHRINE,  # Norepinephrine (MV)
        221289: Drug.EPINEPHRINE,  # Epinephrine (MV)
        221662: Drug.DOPAMINE,  # Dopamine (MV)
        222315: Drug.VASOPRESSIN,  # Vasopressin (MV)
        221749: Drug.PHENYLEPHRINE,  # Phenylephrine (MV)
        221653: Drug.DOBUTAMINE,  # Dobutamine (MV)
        221794: Drug.FUROSEMIDE,  # Furosemide (Lasix) (MV)
        30047: Drug.NOREPINEPHRINE,  # Levophed (CV, mcgmin)
        30120: Drug.NOREPINEPHRINE,  # Levophed-k (CV, mcgkgmin)
        30044: Drug.EPINEPHRINE,  # Epinephrine (CV, mcgmin)
        30119: Drug.EPINEPHRINE,  # Epinephrine-k (CV, mcgkgmin)
        30309: Drug.EPINEPHRINE,  # Epinephrine Drip (CV)
        30043: Drug.DOPAMINE,  # Dopamine (CV)
        30307: Drug.DOPAMINE,  # Dopamine Drip (CV)
        30051: Drug.VASOPRESSIN,  # Vasopressin (CV, Umin; some rows are really U/h)
        30127: Drug.PHENYLEPHRINE,  # Neosynephrine (CV, mcgmin)
        30128: Drug.PHENYLEPHRINE,  # Neosynephrine-k (CV, mcgkgmin)
        30042: Drug.DOBUTAMINE,  # Dobutamine (CV)
        30306: Drug.DOBUTAMINE,  # Dobutamine Drip (CV)
        30123: Drug.FUROSEMIDE,  # Lasix (CV, mghr)
    }
)

# Rate units as MetaVision / CareVue spell them -> (factor, per-kg?, Infusion.rate_unit).
# A per-minute mcg rate needs the weight (divided by kg); U/h and mg/min are rescaled.
RATE_UNITS: Mapping[str, tuple[float, bool, str]] = MappingProxyType(
    {
        "mcg/kg/min": (1.0, False, "ug/kg/min"),
        "mcgkgmin": (1.0, False, "ug/kg/min"),
        "mcg/min": (1.0, True, "ug/kg/min"),
        "mcgmin": (1.0, True, "ug/kg/min"),
        "units/min": (1.0, False, "U/min"),
        "umin": (1.0, False, "U/min"),
        "units/hour": (1.0 / 60.0, False, "U/min"),
        "uhr": (1.0 / 60.0, False, "U/min"),
        "mg/hour": (1.0, False, "mg/h"),
        "mghr": (1.0, False, "mg/h"),
        "mg/min": (60.0, False, "mg/h"),
        "mgmin": (60.0, False, "mg/h"),
    }
)

# CareVue vasopressin 30051 is charted "Umin", but some rows carry the hourly rate: 10094
# charts 1.2 "Umin" every hour next to an amount of 1.2 U per hour (0.02 U/min). Clinical
# doses are 0.01-0.04 U/min (Surviving Sepsis Campaign 2021; VASST, Russell NEJM 2008),
# at most ~0.1 U/min as salvage, so a charted rate above this limit is read as U/h (/60).
VASOPRESSIN_CV = 30051
VASOPRESSIN_MAX_U_PER_MIN = 0.2

# derived_crrt_chartevents.csv (MetaVision category "Dialysis", Prismaflex charting):
# itemid -> quantity, or None = kept on the crrt topic as a flagged unknown (LOCAL code).
CRRT_ITEMS: Mapping[int, tuple[Quantity | None, str]] = MappingProxyType(
    {
        224144: (_Q.CRRT_BLOOD_FLOW, "mL/min"),  # Blood Flow (ml/min)
        224149: (_Q.CRRT_ACCESS_PRESSURE, "mm[Hg]"),  # Access Pressure
        # Prismaflex "filter pressure" is measured at the filter inlet: the pre-filter pressure
        224150: (_Q.CRRT_PREFILTER_PRESSURE, "mm[Hg]"),  # Filter Pressure
        224151: (_Q.CRRT_EFFLUENT_PRESSURE, "mm[Hg]"),  # Effluent Pressure
        224152: (_Q.CRRT_RETURN_PRESSURE, "mm[Hg]"),  # Return Pressure
        224153: (_Q.CRRT_REPLACEMENT_RATE, "mL/h"),  # Replacement Rate (ml/hr)
        224154: (_Q.CRRT_DIALYSATE_RATE, "mL/h"),  # Dialysate Rate (ml/hr)
        # the patient fluid removal set per hour: charted in mL, it is the net UF rate in mL/h
        224191: (_Q.CRRT_NET_UF_RATE, "mL/h"),  # Hourly Patient Fluid Removal
        # a volume since the previous charting, whereas crrt_fluid_removed is cumulative
        # (docs/protocols.md): kept, flagged unknown, rather than mislabelled
        226457: (None, "mL"),  # Ultrafiltrate Output
        227290: (_Q.CRRT_MODE, "1"),  # CRRT mode (text, e.g. CVVHDF)
        224146: (None, ""),  # System Integrity (text: Active, Clots Present, Clotted ...)
        224145: (None, "U/h"),  # Heparin Dose (per hour)
        225958: (None, "U/mL"),  # Heparin Concentration (units/mL)
        225183: (None, "mL"),  # Current Goal
        225976: (None, ""),  # Replacement Fluid (text)
        225977: (None, ""),  # Dialysate Fluid (text)
        226499: (None, "mL"),  # Hemodialysis Output
    }
)
