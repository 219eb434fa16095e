"""The wire format: a batch of readings as a FHIR R4 transaction Bundle, zlib-compressed.

``mmu.readings/3`` (the current one): the payload is a FHIR R4 ``transaction`` Bundle
(:mod:`sync.fhir` builds it; the schema, unit and store epoch are ``Bundle.meta.tag`` codes, the
batch id is ``Bundle.identifier``), JSON, compressed with zlib (RFC 1950) primed with a preset
dictionary: :data:`ZDICT` (``mmu-zdict-3``; payloads primed with ``mmu-zdict-2`` still decode).
MQTT 5 says so: content type ``application/zlib`` and the user
properties :data:`WIRE_PROPERTIES` (the inner media type, the dictionary's name and Adler-32).
The zlib header itself names the dictionary (its Adler-32, RFC 1950 DICTID): the decoder picks
the dictionary from it, so a third party needs only the dictionary bytes (docs/wire-format.md).

``mmu.readings/2`` (a JSON envelope ``{"schema", "unit", "epoch", "batch_id", "seq_from",
"seq_to", "created_at", "bundle"}`` with a collection Bundle, dictionary V1) is still decoded,
so a unit not yet updated keeps syncing; ``mmu.readings/1`` (no epoch) is refused with a
:class:`CodecError` that says so. Decoding is strict and bounded (a decompression bomb is
refused): anything malformed raises :class:`CodecError` and nothing else.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sync import fhir, fhir_text, topics

SCHEMA: Final = fhir.SCHEMA
LEGACY_SCHEMA: Final = "mmu.readings/2"
RETIRED_SCHEMAS: Final = frozenset({"mmu.readings/1"})
INNER_CONTENT_TYPE: Final = "application/fhir+json; fhirVersion=4.0"
CONTENT_TYPE: Final = topics.READINGS.content_type  # RFC 6713: the payload is a zlib stream
ENCODING: Final = "zlib+dict3"  # zlib with the preset dictionary ZDICT_V3
MAX_DECOMPRESSED: Final = 32 * 1024 * 1024
LOINC: Final = fhir.LOINC
MDC: Final = fhir.MDC
UCUM: Final = fhir.UCUM
SEQ_SYSTEM: Final = "urn:mmu:seq"  # mmu.readings/2: an Observation identifier
EPOCH_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # a uuid, in practice


# A preset dictionary primes zlib with the FHIR boilerplate every batch repeats, so a batch of
# one reading (an alert on a flapping 2G link) is small too. Never edit it: add a new version.
# Most frequent strings last (zlib reaches the end of the window with the shortest distances).
# It still says "mmu.readings/1": a dictionary is only a source of likely substrings, and
# mmu.readings/2 envelopes compress with it as well (one byte differs).
ZDICT_V1: Final = (
    b'{"schema":"mmu.readings/1","unit":"mmu-","batch_id":"","seq_from":,"seq_to":,'
    b'"created_at":"2026-","bundle":{"resourceType":"Bundle","type":"collection","entry":['
    b'"dataAbsentReason":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/'
    b'data-absent-reason","code":"unknown"}]},"encounter":{"reference":"Encounter/'
    b'{"url":"urn:mmu:fhir:flags","valueString":"alert"},'
    b'{"url":"urn:mmu:fhir:device-time","valueString":"2026-"},'
    b'{"url":"http://hl7.org/fhir/StructureDefinition/geolocation","extension":['
    b'{"url":"latitude","valueDecimal":},{"url":"longitude","valueDecimal":-}]},'
    b'"mm[Hg]","8480-6","150021","systolic_bp""8462-4","150022","diastolic_bp",'
    b'"Cel","8310-5","150364","body_temperature""kg","29463-7","188736","body_weight",'
    b'"/min","8867-4","149530","pulse_rate""%","59408-5","150456","spo2",'
    b'{"resource":{"resourceType":"Observation","id":"","identifier":[{"system":'
    b'"urn:mmu:seq:mmu-","value":""}],"status":"final","code":{"coding":[{"system":'
    b'"http://loinc.org","code":""},{"system":"urn:iso:std:iso:11073:10101","code":""}],'
    b'"text":""},"effectiveDateTime":"2026-11-T:.Z","issued":"2026-11-T:.Z","device":'
    b'{"identifier":{"value":"oximeter-"}},"valueQuantity":{"value":,"unit":"","system":'
    b'"http://unitsofmeasure.org","code":""},"extension":[{"url":"urn:mmu:fhir:clock-source",'
    b'"valueCode":"system"}]}},'
)


# Version 2: the mmu.readings/3 transaction Bundle's boilerplate: sync/fhir.py's output, with
# the values emptied, for a GPS fix, an encounter (Patient, Location, Encounter), lab results,
# body composition, vital signs, a BP panel, SpO2 last (the most frequent: shortest distances).
# Never edit it: add a version (and its name to DICTIONARIES).
ZDICT_V2: Final = (
    b'{"resourceType":"Bundle","meta":{"tag":[{"system":"urn:mmu:schema","code":"mmu.readings/'
    b'3"},{"system":"urn:mmu:unit","code":"mmu-"},{"system":"urn:mmu:epoch","code":""},{"syste'
    b'm":"urn:mmu:seqs","code":"1-"}]},"identifier":{"system":"urn:ietf:rfc:3986","value":"urn'
    b':uuid:"},"type":"transaction","timestamp":"2026-11-T:.Z","entry":[{"fullUrl":"urn:uuid:9'
    b'0e135fc-a750-5441-8c5a-d0fe05d4381d","resource":{"resourceType":"Device","identifier":[{'
    b'"system":"urn:mmu:device:mmu-","value":""}],"deviceName":[{"name":"","type":"user-friend'
    b'ly-name"}]},"request":{"method":"POST","url":"Device","ifNoneExist":"identifier=urn:mmu:'
    b'device:mmu-|"}},{"resource":{"resourceType":"Location","identifier":[{"system":"urn:mmu:'
    b'reading","value":""},{"system":"urn:mmu:reading","value":""},{"system":"urn:mmu:reading"'
    b',"value":""}],"status":"active","mode":"instance","physicalType":{"coding":[{"system":"h'
    b'ttp://terminology.hl7.org/CodeSystem/location-physical-type","code":"ve"}]},"position":{'
    b'"latitude":0,"longitude":0,"altitude":0},"extension":[{"url":"urn:mmu:fhir:device-time",'
    b'"valueString":"2026-11-T:Z"}]},"request":{"method":"POST","url":"Location","ifNoneExist"'
    b':"identifier=urn:mmu:reading|"}},{"request":{"method":"POST","url":"Observation","ifNone'
    b'Exist":"identifier=urn:mmu:reading|"},"resource":{"resourceType":"Observation","identifi'
    b'er":[{"system":"urn:mmu:reading","value":""},{"system":"urn:mmu:source","value":"hl7:[\\"'
    b'"}],"status":"preliminary","category":[{"coding":[{"system":"http://terminology.hl7.org/'
    b'CodeSystem/observation-category","code":"laboratory"}]}],"code":{"coding":[{"system":"ht'
    b'tp://loinc.org","code":"14743-9"},{"system":"urn:iso:std:iso:11073:10101","code":"160184'
    b'"}]},"subject":{"reference":"urn:uuid:90e135fc-a750-5441-8c5a-d0fe05d4381d"},"device":{"'
    b'reference":"urn:uuid:90e135fc-a750-5441-8c5a-d0fe05d4381d"},"effectiveDateTime":"2026-11'
    b'-T:.Z","valueQuantity":{"value":0,"unit":"mmol/L","system":"http://unitsofmeasure.org","'
    b'code":"mmol/L"},"extension":[{"url":"urn:mmu:fhir:device-time","valueString":"2026-11-T:'
    b'"}]}},{"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=urn:mmu:'
    b'reading|"},"resource":{"resourceType":"Observation","identifier":[{"system":"urn:mmu:rea'
    b'ding","value":""}],"status":"final","category":[{"coding":[{"system":"http://terminology'
    b'.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],"code":{"coding":[{"sy'
    b'stem":"http://loinc.org","code":"41653-7"},{"system":"urn:iso:std:iso:11073:10101","code'
    b'":"160184"}]},"subject":{"reference":"urn:uuid:90e135fc-a750-5441-8c5a-d0fe05d4381d"},"d'
    b'evice":{"reference":"urn:uuid:90e135fc-a750-5441-8c5a-d0fe05d4381d"},"effectiveDateTime"'
    b':"2026-11-T:.Z","dataAbsentReason":{"coding":[{"system":"http://terminology.hl7.org/Code'
    b'System/data-absent-reason","code":"unknown"}]},"extension":[{"url":"urn:mmu:fhir:flags",'
    b'"valueString":"alert"},{"url":"urn:mmu:fhir:clock-source","valueCode":"gps"}]}},{"reques'
    b't":{"method":"POST","url":"Observation","ifNoneExist":"identifier=urn:mmu:reading|"},"re'
    b'source":{"resourceType":"Observation","identifier":[{"system":"urn:mmu:reading","value":'
    b'""}],"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeS'
    b'ystem/observation-category","code":"laboratory"}]}],"code":{"coding":[{"system":"http://'
    b'loinc.org","code":"4548-4"},{"system":"urn:iso:std:iso:11073:10101","code":"160220"}]},"'
    b'subject":{"reference":"urn:uuid:90e135fc-a750-5441-8c5a-d0fe05d4381d"},"device":{"refere'
    b'nce":"urn:uuid:90e135fc-a750-5441-8c5a-d0fe05d4381d"},"effectiveDateTime":"2026-11-T:.Z"'
    b',"valueQuantity":{"value":0,"unit":"%","system":"http://unitsofmeasure.org","code":"%"}}'
    b'},{"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=urn:mmu:read'
    b'ing|"},"resource":{"resourceType":"Observation","identifier":[{"system":"urn:mmu:reading'
    b'","value":""}],"status":"final","category":[{"coding":[{"system":"http://terminology.hl7'
    b'.org/CodeSystem/observation-category","code":"exam"}]}],"code":{"coding":[{"system":"htt'
    b'p://loinc.org","code":"41982-0"},{"system":"urn:iso:std:iso:11073:10101","code":"188748"'
    b'}]},"subject":{"reference":"urn:uuid:90e135fc-a750-5441-8c5a-d0fe05d4381d"},"device":{"r'
    b'eference":"urn:uuid:90e135fc-a750-5441-8c5a-d0fe05d4381d"},"effectiveDateTime":"2026-11-'
    b'T:.Z","valueQuantity":{"value":0,"unit":"%","system":"http://unitsofmeasure.org","code":'
    b'"%"}}},{"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=urn:mmu'
    b':reading|"},"resource":{"resourceType":"Observation","identifier":[{"system":"urn:mmu:re'
    b'ading","value":""}],"status":"final","category":[{"coding":[{"system":"http://terminolog'
    b'y.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"'
    b'system":"http://loinc.org","code":"8310-5"},{"system":"urn:iso:std:iso:11073:10101","cod'
    b'e":"150364"}]},"subject":{"reference":"urn:uuid:90e135fc-a750-5441-8c5a-d0fe05d4381d"},"'
    b'device":{"reference":"urn:uuid:90e135fc-a750-5441-8c5a-d0fe05d4381d"},"effectiveDateTime'
    b'":"2026-11-T:.Z","valueQuantity":{"value":0,"unit":"Cel","system":"http://unitsofmeasure'
    b'.org","code":"Cel"}}},{"request":{"method":"POST","url":"Observation","ifNoneExist":"ide'
    b'ntifier=urn:mmu:reading|"},"resource":{"resourceType":"Observation","identifier":[{"syst'
    b'em":"urn:mmu:reading","value":""}],"status":"final","category":[{"coding":[{"system":"ht'
    b'tp://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code'
    b'":{"coding":[{"system":"http://loinc.org","code":"29463-7"},{"system":"urn:iso:std:iso:1'
    b'1073:10101","code":"188736"}]},"subject":{"reference":"urn:uuid:90e135fc-a750-5441-8c5a-'
    b'd0fe05d4381d"},"device":{"reference":"urn:uuid:90e135fc-a750-5441-8c5a-d0fe05d4381d"},"e'
    b'ffectiveDateTime":"2026-11-T:.Z","valueQuantity":{"value":0,"unit":"kg","system":"http:/'
    b'/unitsofmeasure.org","code":"kg"}}},{"request":{"method":"POST","url":"Observation","ifN'
    b'oneExist":"identifier=urn:mmu:reading|"},"resource":{"resourceType":"Observation","ident'
    b'ifier":[{"system":"urn:mmu:reading","value":""}],"status":"final","category":[{"coding":'
    b'[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-si'
    b'gns"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"9279-1"},{"system":"urn:'
    b'iso:std:iso:11073:10101","code":"151562"}]},"subject":{"reference":"urn:uuid:90e135fc-a7'
    b'50-5441-8c5a-d0fe05d4381d"},"device":{"reference":"urn:uuid:90e135fc-a750-5441-8c5a-d0fe'
    b'05d4381d"},"effectiveDateTime":"2026-11-T:.Z","valueQuantity":{"value":0,"unit":"/min","'
    b'system":"http://unitsofmeasure.org","code":"/min"}}},{"request":{"method":"POST","url":"'
    b'Observation","ifNoneExist":"identifier=urn:mmu:reading|"},"resource":{"resourceType":"Ob'
    b'servation","identifier":[{"system":"urn:mmu:reading","value":""},{"system":"urn:mmu:read'
    b'ing","value":""},{"system":"urn:mmu:reading","value":""}],"status":"final","category":[{'
    b'"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":'
    b'"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"co'
    b'mponent":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"},{"system":"ur'
    b'n:iso:std:iso:11073:10101","code":"150021"}]},"valueQuantity":{"value":0,"unit":"mm[Hg]"'
    b',"system":"http://unitsofmeasure.org","code":"mm[Hg]"}},{"code":{"coding":[{"system":"ht'
    b'tp://loinc.org","code":"8462-4"},{"system":"urn:iso:std:iso:11073:10101","code":"150022"'
    b'}]},"valueQuantity":{"value":0,"unit":"mm[Hg]","system":"http://unitsofmeasure.org","cod'
    b'e":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org","code":"8478-0"},{"system"'
    b':"urn:iso:std:iso:11073:10101","code":"150023"}]},"valueQuantity":{"value":0,"unit":"mm['
    b'Hg]","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}],"subject":{"reference":"urn'
    b':uuid:90e135fc-a750-5441-8c5a-d0fe05d4381d"},"device":{"reference":"urn:uuid:90e135fc-a7'
    b'50-5441-8c5a-d0fe05d4381d"},"effectiveDateTime":"2026-11-T:.Z"}},{"request":{"method":"P'
    b'OST","url":"Observation","ifNoneExist":"identifier=urn:mmu:reading|"},"resource":{"resou'
    b'rceType":"Observation","identifier":[{"system":"urn:mmu:reading","value":""}],"status":"'
    b'final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observati'
    b'on-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","co'
    b'de":"8867-4"},{"system":"urn:iso:std:iso:11073:10101","code":"149530"}]},"subject":{"ref'
    b'erence":"urn:uuid:90e135fc-a750-5441-8c5a-d0fe05d4381d"},"device":{"reference":"urn:uuid'
    b':90e135fc-a750-5441-8c5a-d0fe05d4381d"},"effectiveDateTime":"2026-11-T:.Z","valueQuantit'
    b'y":{"value":0,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}},{"requ'
    b'est":{"method":"POST","url":"Observation","ifNoneExist":"identifier=urn:mmu:reading|"},"'
    b'resource":{"resourceType":"Observation","identifier":[{"system":"urn:mmu:reading","value'
    b'":""}],"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/Cod'
    b'eSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http'
    b'://loinc.org","code":"2708-6"},{"system":"http://loinc.org","code":"59408-5"},{"system":'
    b'"urn:iso:std:iso:11073:10101","code":"150456"}]},"subject":{"reference":"urn:uuid:90e135'
    b'fc-a750-5441-8c5a-d0fe05d4381d"},"device":{"reference":"urn:uuid:90e135fc-a750-5441-8c5a'
    b'-d0fe05d4381d"},"effectiveDateTime":"2026-11-T:.Z","valueQuantity":{"value":0,"unit":"%"'
    b',"system":"http://unitsofmeasure.org","code":"%"}}}]}'
)
ZDICT_V2_NAME: Final = "mmu-zdict-2"

# Version 3: the same, from scripts/zdict.py (issue 8: the Device with what the device told us,
# Observation.device only beside a Patient, no MDC coding beside a vital-signs profile's
# LOINC). Never edit it: add a version (and its name to DICTIONARIES).
ZDICT_V3: Final = (
    b'{"resourceType":"Bundle","meta":{"tag":[{"system":"urn:mmu:schema","code":"mmu.readings/3"'
    b'},{"system":"urn:mmu:unit","code":"mmu-"},{"system":"urn:mmu:epoch","code":""},{"system":"'
    b'urn:mmu:seqs","code":"1-"}]},"identifier":{"system":"urn:ietf:rfc:3986","value":"urn:uuid:'
    b'"},"type":"transaction","timestamp":"2026-11-T:.Z","entry":[{"fullUrl":"urn:uuid:","resour'
    b'ce":{"resourceType":"Device","identifier":[{"system":"urn:mmu:device:mmu-","value":""},{"t'
    b'ype":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"SNO"}]},'
    b'"value":""},{"system":"urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680","value":""},{"system"'
    b':"http://hl7.org/fhir/sid/eui-48/bluetooth","value":""}],"manufacturer":"","serialNumber":'
    b'"","modelNumber":"","deviceName":[{"name":"","type":"user-friendly-name"}],"type":{"coding'
    b'":[{"system":"urn:iso:std:iso:11073:10101","code":"528388"}]},"version":[{"type":{"coding"'
    b':[{"system":"urn:iso:std:iso:11073:10101","code":"531976"}]},"value":""}]},"request":{"met'
    b'hod":"PUT","url":"Device?identifier=urn:mmu:device:mmu-|"}},{"fullUrl":"urn:uuid:","resour'
    b'ce":{"resourceType":"Patient","identifier":[{"system":"urn:mmu:patient:national-id","value'
    b'":""}]},"request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:mmu:patie'
    b'nt:national-id|"}},{"fullUrl":"urn:uuid:","resource":{"resourceType":"Location","identifie'
    b'r":[{"system":"urn:mmu:location","value":""}],"status":"active","mode":"instance","positio'
    b'n":{"latitude":0,"longitude":0}},"request":{"method":"POST","url":"Location","ifNoneExist"'
    b':"identifier=urn:mmu:location|"}},{"fullUrl":"urn:uuid:","resource":{"resourceType":"Encou'
    b'nter","identifier":[{"system":"urn:mmu:encounter","value":""}],"status":"in-progress","cla'
    b'ss":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"FLD","display":"f'
    b'ield"},"subject":{"reference":"urn:uuid:"},"period":{"start":"2026-11-T:.Z"},"serviceProvi'
    b'der":{"identifier":{"system":"urn:mmu:unit","value":"mmu-"},"display":"mmu-"},"participant'
    b'":[{"type":[{"text":"nurse"}]}],"location":[{"location":{"reference":"urn:uuid:"}}]},"requ'
    b'est":{"method":"PUT","url":"Encounter?identifier=urn:mmu:encounter|"}},{"resource":{"resou'
    b'rceType":"Location","identifier":[{"system":"urn:mmu:reading","value":""},{"system":"urn:m'
    b'mu:reading","value":""},{"system":"urn:mmu:reading","value":""}],"status":"active","mode":'
    b'"instance","physicalType":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/loca'
    b'tion-physical-type","code":"ve"}]},"position":{"latitude":0,"longitude":0,"altitude":0},"e'
    b'xtension":[{"url":"urn:mmu:fhir:device-time","valueString":"2026-11-T:.Z"}]},"request":{"m'
    b'ethod":"POST","url":"Location","ifNoneExist":"identifier=urn:mmu:reading|"}},{"request":{"'
    b'method":"POST","url":"Observation","ifNoneExist":"identifier=urn:mmu:reading|"},"resource"'
    b':{"resourceType":"Observation","identifier":[{"system":"urn:mmu:reading","value":""}],"sta'
    b'tus":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/obser'
    b'vation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","'
    b'code":"2708-6"},{"system":"http://loinc.org","code":"59408-5"}]},"subject":{"reference":"u'
    b'rn:uuid:"},"encounter":{"reference":"urn:uuid:"},"device":{"reference":"urn:uuid:"},"effec'
    b'tiveDateTime":"2026-11-T:.Z","valueQuantity":{"value":0,"unit":"%","system":"http://unitso'
    b'fmeasure.org","code":"%"}}},{"request":{"method":"POST","url":"Observation","ifNoneExist":'
    b'"identifier=urn:mmu:reading|"},"resource":{"resourceType":"Observation","identifier":[{"sy'
    b'stem":"urn:mmu:reading","value":""},{"system":"urn:mmu:source","value":"hl7:[\\""}],"status'
    b'":"preliminary","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/ob'
    b'servation-category","code":"laboratory"}]}],"code":{"coding":[{"system":"http://loinc.org"'
    b',"code":"14743-9"},{"system":"urn:iso:std:iso:11073:10101","code":"160184"}]},"subject":{"'
    b'reference":"urn:uuid:"},"effectiveDateTime":"2026-11-T:.Z","issued":"2026-11-T:.Z","valueQ'
    b'uantity":{"value":0,"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"},'
    b'"extension":[{"url":"urn:mmu:fhir:device-time","valueString":"2026-11-T:"}]}},{"request":{'
    b'"method":"POST","url":"Observation","ifNoneExist":"identifier=urn:mmu:reading|"},"resource'
    b'":{"resourceType":"Observation","identifier":[{"system":"urn:mmu:reading","value":""}],"st'
    b'atus":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/obse'
    b'rvation-category","code":"laboratory"}]}],"code":{"coding":[{"system":"http://loinc.org","'
    b'code":"41653-7"},{"system":"urn:iso:std:iso:11073:10101","code":"160184"}]},"subject":{"re'
    b'ference":"urn:uuid:"},"effectiveDateTime":"2026-11-T:.Z","dataAbsentReason":{"coding":[{"s'
    b'ystem":"http://terminology.hl7.org/CodeSystem/data-absent-reason","code":"unknown"}]},"ext'
    b'ension":[{"url":"urn:mmu:fhir:flags","valueString":"alert"},{"url":"urn:mmu:fhir:clock-sou'
    b'rce","valueCode":"gps"}]}},{"request":{"method":"POST","url":"Observation","ifNoneExist":"'
    b'identifier=urn:mmu:reading|"},"resource":{"resourceType":"Observation","identifier":[{"sys'
    b'tem":"urn:mmu:reading","value":""}],"status":"final","category":[{"coding":[{"system":"htt'
    b'p://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],"code":{"'
    b'coding":[{"system":"http://loinc.org","code":"4548-4"},{"system":"urn:iso:std:iso:11073:10'
    b'101","code":"160220"}]},"subject":{"reference":"urn:uuid:"},"effectiveDateTime":"2026-11-T'
    b':.Z","valueQuantity":{"value":0,"unit":"%","system":"http://unitsofmeasure.org","code":"%"'
    b'}}},{"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=urn:mmu:read'
    b'ing|"},"resource":{"resourceType":"Observation","identifier":[{"system":"urn:mmu:reading",'
    b'"value":""}],"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org'
    b'/CodeSystem/observation-category","code":"exam"}]}],"code":{"coding":[{"system":"http://lo'
    b'inc.org","code":"41982-0"},{"system":"urn:iso:std:iso:11073:10101","code":"188748"}]},"sub'
    b'ject":{"reference":"urn:uuid:"},"effectiveDateTime":"2026-11-T:.Z","valueQuantity":{"value'
    b'":0,"unit":"%","system":"http://unitsofmeasure.org","code":"%"}}},{"request":{"method":"PO'
    b'ST","url":"Observation","ifNoneExist":"identifier=urn:mmu:reading|"},"resource":{"resource'
    b'Type":"Observation","identifier":[{"system":"urn:mmu:reading","value":""}],"status":"final'
    b'","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-cate'
    b'gory","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8310'
    b'-5"}]},"subject":{"reference":"urn:uuid:"},"effectiveDateTime":"2026-11-T:.Z","valueQuanti'
    b'ty":{"value":0,"unit":"Cel","system":"http://unitsofmeasure.org","code":"Cel"}}},{"request'
    b'":{"method":"POST","url":"Observation","ifNoneExist":"identifier=urn:mmu:reading|"},"resou'
    b'rce":{"resourceType":"Observation","identifier":[{"system":"urn:mmu:reading","value":""}],'
    b'"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/o'
    b'bservation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.or'
    b'g","code":"29463-7"}]},"subject":{"reference":"urn:uuid:"},"effectiveDateTime":"2026-11-T:'
    b'.Z","valueQuantity":{"value":0,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg'
    b'"}}},{"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=urn:mmu:rea'
    b'ding|"},"resource":{"resourceType":"Observation","identifier":[{"system":"urn:mmu:reading"'
    b',"value":""}],"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.or'
    b'g/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"h'
    b'ttp://loinc.org","code":"9279-1"}]},"subject":{"reference":"urn:uuid:"},"effectiveDateTime'
    b'":"2026-11-T:.Z","valueQuantity":{"value":0,"unit":"/min","system":"http://unitsofmeasure.'
    b'org","code":"/min"}}},{"request":{"method":"POST","url":"Observation","ifNoneExist":"ident'
    b'ifier=urn:mmu:reading|"},"resource":{"resourceType":"Observation","identifier":[{"system":'
    b'"urn:mmu:reading","value":""},{"system":"urn:mmu:reading","value":""},{"system":"urn:mmu:r'
    b'eading","value":""}],"status":"final","category":[{"coding":[{"system":"http://terminology'
    b'.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"sys'
    b'tem":"http://loinc.org","code":"85354-9"}]},"component":[{"code":{"coding":[{"system":"htt'
    b'p://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":0,"unit":"mm[Hg]","system":"htt'
    b'p://unitsofmeasure.org","code":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org",'
    b'"code":"8462-4"}]},"valueQuantity":{"value":0,"unit":"mm[Hg]","system":"http://unitsofmeas'
    b'ure.org","code":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org","code":"8478-0"'
    b'}]},"valueQuantity":{"value":0,"unit":"mm[Hg]","system":"http://unitsofmeasure.org","code"'
    b':"mm[Hg]"}}],"subject":{"reference":"urn:uuid:"},"effectiveDateTime":"2026-11-T:.Z"}},{"re'
    b'quest":{"method":"POST","url":"Observation","ifNoneExist":"identifier=urn:mmu:reading|"},"'
    b'resource":{"resourceType":"Observation","identifier":[{"system":"urn:mmu:reading","value":'
    b'""}],"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSys'
    b'tem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loi'
    b'nc.org","code":"8867-4"}]},"subject":{"reference":"urn:uuid:"},"effectiveDateTime":"2026-1'
    b'1-T:.Z","valueQuantity":{"value":0,"unit":"/min","system":"http://unitsofmeasure.org","cod'
    b'e":"/min"}}},{"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=urn'
    b':mmu:reading|"},"resource":{"resourceType":"Observation","identifier":[{"system":"urn:mmu:'
    b'reading","value":""}],"status":"final","category":[{"coding":[{"system":"http://terminolog'
    b'y.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"sy'
    b'stem":"http://loinc.org","code":"2708-6"},{"system":"http://loinc.org","code":"59408-5"}]}'
    b',"subject":{"reference":"urn:uuid:"},"effectiveDateTime":"2026-11-T:.Z","valueQuantity":{"'
    b'value":0,"unit":"%","system":"http://unitsofmeasure.org","code":"%"}}}]}'
)
ZDICT_V3_NAME: Final = "mmu-zdict-3"
ZDICT: Final = ZDICT_V3  # what encode_batch primes zlib with
ZDICT_NAME: Final = ZDICT_V3_NAME
# Every dictionary a unit ever sent with, by Adler-32 (the zlib header's DICTID): payloads
# compressed with an older one (a unit not yet updated, a batch stored before) still decode.
DICTIONARIES: Final[Mapping[int, bytes]] = {
    zlib.adler32(d): d for d in (ZDICT_V1, ZDICT_V2, ZDICT_V3)
}
# What the MQTT 5 user properties say about a readings payload (beside content type
# application/zlib): enough for a platform that is not ours to decode it.
# (The dictionary's Adler-32 is in the zlib header itself: RFC 1950 DICTID.)
WIRE_PROPERTIES: Final = (
    ("schema", SCHEMA),
    ("encoding", ENCODING),
    ("inner-content-type", INNER_CONTENT_TYPE),
    ("zlib-dictionary", ZDICT_NAME),
)


class CodecError(ValueError):
    """A payload that is not a valid batch (bad compression, JSON, schema or field)."""


@dataclass(frozen=True)
class Carried:
    """One reading of a batch: its id and seq, and the resource that carries it (its own
    Observation, a BP panel with the other parts of its measurement, a GPS Location)."""

    id: str
    seq: int
    resource: dict[str, Any]
    update: bool = False  # sent again as a conditional update (attributed after it was sent)
    part: int = 0  # its place among the resource's readings (a panel's component, a fix's axis)


@dataclass(frozen=True)
class Batch:
    unit: str
    epoch: str
    batch_id: str
    seq_from: int
    seq_to: int
    created_at: str
    readings: list[Carried]
    # Patient, Encounter, Device, Location, with whether the Bundle asks to update them (PUT)
    # or only to create them when missing (POST with ifNoneExist).
    resources: list[Other] = field(default_factory=list)


@dataclass(frozen=True)
class Other:
    resource: dict[str, Any]
    update: bool


def encode_batch(
    unit: str, batch_id: str, rows: Sequence[Mapping[str, Any]], created_at: str, *, epoch: str
) -> bytes:
    if not rows:
        raise ValueError("a batch needs at least one reading")
    if not EPOCH_PATTERN.fullmatch(epoch):
        raise ValueError(f"epoch {epoch!r} is not 1-64 characters of [A-Za-z0-9._:-]")
    text = fhir_text.bundle_json(unit, epoch, batch_id, rows, created_at)
    packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, ZDICT)
    return packer.compress(text.encode("utf-8")) + packer.flush()


def dictionary_of(payload: bytes) -> bytes | None:
    """The preset dictionary the zlib header names (RFC 1950 FDICT + DICTID); None if the
    stream has none."""
    if len(payload) < 6 or payload[0] & 0x0F != 8 or (payload[0] << 8 | payload[1]) % 31:
        return None  # not a zlib header: inflating says so
    if not payload[1] & 0x20:
        return None
    wanted = int.from_bytes(payload[2:6], "big")
    found = DICTIONARIES.get(wanted)
    if found is None:
        raise CodecError(f"unknown zlib preset dictionary {wanted:08x}")
    return found


def _inflate(payload: bytes) -> bytes:
    zdict = dictionary_of(payload)
    inflater = zlib.decompressobj(zdict=zdict) if zdict is not None else zlib.decompressobj()
    try:
        data = inflater.decompress(payload, MAX_DECOMPRESSED)
    except zlib.error as exc:
        raise CodecError(f"not zlib data: {exc}") from None
    if inflater.unconsumed_tail:
        raise CodecError(f"decompressed size over {MAX_DECOMPRESSED} bytes")
    if not inflater.eof:
        raise CodecError("truncated zlib stream")
    return data


def decode_batch(payload: bytes) -> Batch:
    try:
        doc = json.loads(_inflate(payload))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"not JSON: {exc}") from None
    except RecursionError:  # absurdly nested arrays: small once compressed
        raise CodecError("JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise CodecError("payload is not a JSON object")
    if doc.get("resourceType") == "Bundle":
        return _decode_bundle(doc)
    schema = doc.get("schema")
    if isinstance(schema, str) and schema in RETIRED_SCHEMAS:
        raise CodecError(
            f"schema {schema} is retired (no store epoch): the unit must be "
            f"updated to send {SCHEMA}"
        )
    if schema != LEGACY_SCHEMA:
        raise CodecError(f"schema is not {SCHEMA}")
    return _decode_envelope(doc)


def _check_ids(unit: Any, epoch: Any, batch_id: Any) -> None:
    if not (isinstance(unit, str) and isinstance(batch_id, str)):
        raise CodecError("bad envelope fields")
    if not isinstance(epoch, str) or not EPOCH_PATTERN.fullmatch(epoch):
        raise CodecError("epoch is not 1-64 characters of [A-Za-z0-9._:-]")


def _decode_envelope(env: dict[str, Any]) -> Batch:
    """mmu.readings/2: a collection of Observations, one per reading."""
    try:
        unit, batch_id, epoch = env["unit"], env["batch_id"], env["epoch"]
        seq_from, seq_to = env["seq_from"], env["seq_to"]
        entries = env["bundle"]["entry"]
        observations = [e["resource"] for e in entries]
    except (KeyError, TypeError) as exc:
        raise CodecError(f"missing field {exc}") from None
    _check_ids(unit, epoch, batch_id)
    if not (isinstance(seq_from, int) and isinstance(seq_to, int) and seq_from <= seq_to):
        raise CodecError("bad envelope fields")
    readings = []
    for obs in observations:
        if not isinstance(obs, dict) or obs.get("resourceType") != "Observation":
            raise CodecError("bundle entry is not an Observation")
        seq = seq_of(obs)
        if not isinstance(obs.get("id"), str) or seq is None:
            raise CodecError("Observation without id or sequence number")
        readings.append(Carried(obs["id"], seq, obs))
    return Batch(unit, epoch, batch_id, seq_from, seq_to, str(env.get("created_at", "")), readings)


def _tags(bundle: dict[str, Any]) -> dict[str, Any]:
    meta = bundle.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    if not isinstance(tags, list):
        raise CodecError("Bundle without meta.tag")
    return {str(t.get("system")): t.get("code") for t in tags if isinstance(t, dict)}


def _decode_bundle(bundle: dict[str, Any]) -> Batch:
    """mmu.readings/3: a transaction Bundle; readings are the resources with reading ids."""
    tags = _tags(bundle)
    if tags.get(fhir.TAG_SCHEMA) != SCHEMA:
        raise CodecError(f"Bundle is not tagged {SCHEMA}")
    unit, epoch = tags.get(fhir.TAG_UNIT), tags.get(fhir.TAG_EPOCH)
    ident, entries = bundle.get("identifier"), bundle.get("entry")
    batch_id = ident.get("value") if isinstance(ident, dict) else None
    if isinstance(batch_id, str):
        batch_id = batch_id.removeprefix("urn:uuid:")
    _check_ids(unit, epoch, batch_id)
    assert isinstance(unit, str) and isinstance(epoch, str) and isinstance(batch_id, str)
    if not isinstance(entries, list) or not entries:
        raise CodecError("Bundle without entries")
    try:
        seqs = fhir.parse_seq_runs(str(tags.get(fhir.TAG_SEQS, "")))
    except ValueError as exc:
        raise CodecError(f"Bundle tag {fhir.TAG_SEQS}: {exc}") from None
    readings: list[Carried] = []
    others: list[Other] = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(request, dict):
            raise CodecError("Bundle entry without resource or request")
        ids, update = _reading_ids(resource), request.get("method") == "PUT"
        if not ids:
            others.append(Other(resource, update))
            continue
        if len(readings) + len(ids) > len(seqs):
            raise CodecError("more readings than seqs")
        base = len(readings)
        readings.extend(
            Carried(rid, seqs[base + i], resource, update, i) for i, rid in enumerate(ids)
        )
    if not readings or len(readings) != len(seqs):
        raise CodecError(f"{len(readings)} readings for {len(seqs)} seqs")
    return Batch(
        unit,
        epoch,
        batch_id,
        min(seqs),
        max(seqs),
        str(bundle.get("timestamp", "")),
        readings,
        others,
    )


def _reading_ids(resource: dict[str, Any]) -> list[str]:
    idents = resource.get("identifier")
    out = []
    for ident in idents if isinstance(idents, list) else []:
        if isinstance(ident, dict) and ident.get("system") == fhir.READING_SYSTEM:
            value = ident.get("value")
            if not isinstance(value, str) or not value:
                raise CodecError("reading identifier without a value")
            out.append(value)
    return out


def _seq_value(value: Any) -> int | None:
    # isascii: str.isdigit() accepts "²", which int() refuses
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def seq_of(obs: Mapping[str, Any]) -> int | None:
    """The seq of a mmu.readings/2 Observation (identifier ``urn:mmu:seq:<unit>``)."""
    idents = obs.get("identifier")
    for ident in idents if isinstance(idents, list) else []:
        if isinstance(ident, dict) and str(ident.get("system", "")).startswith(SEQ_SYSTEM):
            value = _seq_value(ident.get("value"))
            if value is not None:
                return value
    return None


def observation(unit: str, row: Mapping[str, Any], epoch: str = "0") -> dict[str, Any]:
    """One reading's resource alone (the naive one-message-per-reading baseline)."""
    resource: dict[str, Any] = fhir.bundle(unit, epoch, "single", [row], str(row["received_at"]))[
        "entry"
    ][-1]["resource"]
    return resource
