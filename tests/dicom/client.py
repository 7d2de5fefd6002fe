"""DICOM test client for tests/dicom.rs: builds objects with pydicom and
talks to the node with pynetdicom. Every command prints one JSON line with
what the peer answered, so the Rust test asserts on it.

Commands:
  gen DIR --series N --images M [--rows R] [--seed S] [--phi]
      CT objects of N series x M images (one study), random identifiers in
      names, IDs, dates, addresses, phones, Aadhaar/ABHA in comments and
      private tags when --phi; prints the identifiers it used.
  ctset DIR --count N
      N single-frame CT images of 512x512 16-bit (about 0.5 MB each) in one
      study, for the benchmark (scripts/bench-dicom.sh).
  big FILE --mb N
      One multi-frame object with N MB of Pixel Data, written in chunks.
  mpps HOST PORT CALLING CALLED
      N-CREATE, N-SET COMPLETED, then the refusals: N-SET on the final step,
      N-SET on an unknown instance, N-CREATE without status; prints statuses.
  step HOST PORT CALLING CALLED create|set UID [STATUS]
      One N-CREATE (IN PROGRESS) or N-SET (STATUS, with an end date) of UID.
  assoc HOST PORT CALLING CALLED
      Only associates (echo) and reports accept/reject with result, source, reason.
  mixed HOST PORT CALLING CALLED FILE
      Proposes an unsupported SOP class (Modality Worklist FIND) with CT
      storage; reports each context's result and the C-STORE status.
"""
import json
import os
import random
import string
import sys

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)


def out(obj):
    print(json.dumps(obj), flush=True)


def rnd(rng, n, alphabet=string.ascii_uppercase):
    return "".join(rng.choice(alphabet) for _ in range(n))


def digits(rng, n):
    return "".join(rng.choice(string.digits) for _ in range(n))


def ct(rng, study, series, number, rows, phi):
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study["uid"]
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = study["frame"]
    ds.Modality = "CT"
    ds.Manufacturer = "ACME Medical"
    ds.ManufacturerModelName = "Scanner 9000"
    ds.StationName = "CTROOM3"
    ds.DeviceSerialNumber = "SN-" + study["serial"]
    ds.BodyPartExamined = "CHEST"
    ds.ProtocolName = "CHEST ROUTINE"
    ds.SeriesDescription = "AXIAL 5MM"
    ds.StudyDescription = "CT CHEST"
    ds.KVP = "120"
    ds.CTDIvol = 7.5
    ds.StudyDate = study["date"]
    ds.StudyTime = "101500"
    ds.SeriesDate = study["date"]
    ds.AcquisitionDate = study["date"]
    ds.ContentDate = study["date"]
    ds.ContentTime = "101530"
    ds.InstanceNumber = number
    ds.StudyID = study["study_id"]
    ds.AccessionNumber = study["accession"]
    ds.PatientName = study["name"]
    ds.PatientID = study["mrn"]
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientBirthDate = study["birth"]
    ds.PatientSex = "F"
    ds.PatientAge = "047Y"
    if phi:
        ds.PatientAddress = study["address"]
        ds.PatientTelephoneNumbers = study["phone"]
        ds.InstitutionName = study["institution"]
        ds.ReferringPhysicianName = study["physician"]
        ds.PerformingPhysicianName = study["physician"]
        ds.OperatorsName = study["operator"]
        ds.OtherPatientIDs = study["aadhaar"]
        ds.PatientComments = "Aadhaar %s ABHA %s call %s" % (
            study["aadhaar"], study["abha"], study["phone"])
        block = ds.private_block(0x0011, "ACME PRIVATE", create=True)
        block.add_new(0x01, "LO", study["name"])
        block.add_new(0x02, "LO", "ABHA " + study["abha"])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = rows
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(rng.getrandbits(8) for _ in range(64)) * (rows * rows * 2 // 64)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def study_identity(rng):
    return {
        "uid": generate_uid(),
        "frame": generate_uid(),
        "serial": digits(rng, 8),
        "date": "2026%02d%02d" % (rng.randint(1, 10), rng.randint(1, 28)),
        "study_id": digits(rng, 6),
        "accession": "ACC" + digits(rng, 9),
        "name": "%s^%s" % (rnd(rng, 9), rnd(rng, 7)),
        "mrn": "MRN" + digits(rng, 9),
        "birth": "19%02d%02d%02d" % (rng.randint(30, 99), rng.randint(1, 12), rng.randint(1, 28)),
        "address": "%s %s Street, Pune" % (digits(rng, 3), rnd(rng, 10)),
        "phone": "+91 98%s" % digits(rng, 8),
        "institution": "%s Hospital" % rnd(rng, 10),
        "physician": "%s^%s^DR" % (rnd(rng, 10), rnd(rng, 6)),
        "operator": "%s^%s" % (rnd(rng, 10), rnd(rng, 6)),
        "aadhaar": "%s %s %s" % (digits(rng, 4), digits(rng, 4), digits(rng, 4)),
        "abha": "%s-%s-%s-%s" % (digits(rng, 2), digits(rng, 4), digits(rng, 4), digits(rng, 4)),
    }


def gen(args):
    directory = args[0]
    opts = dict(zip(args[1::2], args[2::2]))
    series_n = int(opts.get("--series", 1))
    images = int(opts.get("--images", 1))
    rows = int(opts.get("--rows", 64))
    rng = random.Random(int(opts.get("--seed", 1)))
    phi = "--phi" in args
    study = study_identity(rng)
    os.makedirs(directory, exist_ok=True)
    files = []
    for s in range(series_n):
        series = generate_uid()
        for i in range(images):
            ds = ct(rng, study, series, i + 1, rows, phi)
            path = os.path.join(directory, "s%02d_i%03d.dcm" % (s, i))
            ds.save_as(path, enforce_file_format=True)
            files.append({"path": path, "sop_instance": ds.SOPInstanceUID,
                          "series": series})
    out({"study": study, "files": files})


def ctset(args):
    directory = args[0]
    count = int(args[2])
    rng = random.Random(3)
    study = study_identity(rng)
    os.makedirs(directory, exist_ok=True)
    template = ct(rng, study, generate_uid(), 1, 16, False)
    template.Rows = 512
    template.Columns = 512
    pixels = bytes(range(256)) * (512 * 512 * 2 // 256)
    template.PixelData = pixels
    series = generate_uid()
    for i in range(count):
        template.SeriesInstanceUID = series
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.InstanceNumber = i + 1
        template.save_as(os.path.join(directory, "ct%05d.dcm" % i), enforce_file_format=True)
    out({"dir": directory, "count": count})


def big(args):
    path = args[0]
    mb = int(args[2])
    rng = random.Random(7)
    study = study_identity(rng)
    ds = ct(rng, study, generate_uid(), 1, 16, False)
    rows = 512
    frame = rows * rows * 2
    frames = max(1, -(-mb * 1000 * 1000 // frame))
    ds.Rows = rows
    ds.Columns = rows
    ds.NumberOfFrames = frames
    del ds.PixelData
    # Write the header with pydicom, then the Pixel Data element by hand in
    # chunks, so the test never holds the whole object in memory.
    ds.save_as(path, enforce_file_format=True)
    length = frame * frames
    chunk = bytes(range(256)) * 4096
    with open(path, "ab") as f:
        f.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
        left = length
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
    out({"path": path, "bytes": os.path.getsize(path), "frames": frames,
         "sop_instance": ds.SOPInstanceUID})


def ae(calling):
    from pynetdicom import AE
    a = AE(ae_title=calling)
    a.acse_timeout = 10
    a.dimse_timeout = 10
    a.network_timeout = 10
    return a


class RejectSeen:
    """Records an A-ASSOCIATE-RJ PDU as the DUL decodes it.

    pynetdicom 3.0 has a race: when the DUL thread has already handled the
    RJ and closed the socket before the requesting thread checks that the
    socket is connected (a loaded machine), the request ends as "failed to
    connect" and aborted, without the response primitive. The PDU itself
    was received; this keeps what it said.
    """

    def __init__(self):
        self.rj = None

    def handlers(self):
        from pynetdicom import evt
        from pynetdicom.pdu import A_ASSOCIATE_RJ

        def on_pdu(event):
            if isinstance(event.pdu, A_ASSOCIATE_RJ):
                self.rj = event.pdu

        return [(evt.EVT_PDU_RECV, on_pdu)]


def reject_info(assoc, seen=None):
    rsp = assoc.acceptor.primitive
    if rsp is None:
        rj = seen.rj if seen is not None else None
        if rj is None:
            return {"accepted": False, "rejected": False}
        return {
            "accepted": False,
            "rejected": True,
            "result": rj.result,
            "source": rj.source,
            "reason": rj.reason_diagnostic,
        }
    return {
        "accepted": assoc.is_established,
        "rejected": assoc.is_rejected,
        "result": rsp.result,
        "source": rsp.result_source,
        "reason": rsp.diagnostic,
    }


def assoc_only(args):
    host, port, calling, called = args[0], int(args[1]), args[2], args[3]
    a = ae(calling)
    a.add_requested_context("1.2.840.10008.1.1")
    seen = RejectSeen()
    assoc = a.associate(host, port, ae_title=called, evt_handlers=seen.handlers())
    info = reject_info(assoc, seen)
    if assoc.is_established:
        st = assoc.send_c_echo()
        info["echo"] = st.Status if st else None
        assoc.release()
    out(info)


def mpps(args):
    from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS
    host, port, calling, called = args[0], int(args[1]), args[2], args[3]
    a = ae(calling)
    a.add_requested_context(MPPS)
    assoc = a.associate(host, port, ae_title=called)
    if not assoc.is_established:
        out({"error": "not established", **reject_info(assoc)})
        return
    result = {}
    uid = generate_uid()
    create = Dataset()
    create.PerformedProcedureStepStatus = "IN PROGRESS"
    create.PerformedProcedureStepStartDate = "20261123"
    create.PerformedProcedureStepStartTime = "101500"
    create.PerformedProcedureStepID = "PPS1"
    create.PerformedStationAETitle = calling
    create.PerformedStationName = "CTROOM3"
    create.Modality = "CT"
    create.PatientName = "MPPS^SECRET"
    create.PatientID = "MRN424242"
    create.PerformedProcedureStepDescription = "CT CHEST"
    proto = Dataset()
    proto.CodeValue = "P1"
    proto.CodingSchemeDesignator = "99LOCAL"
    proto.CodeMeaning = "CHEST ROUTINE"
    create.PerformedProtocolCodeSequence = [proto]
    sps = Dataset()
    sps.StudyInstanceUID = generate_uid()
    sps.AccessionNumber = "ACC123456789"
    create.ScheduledStepAttributesSequence = [sps]
    st, _ = assoc.send_n_create(create, MPPS, uid)
    result["create"] = st.Status if st else None
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    done.PerformedProcedureStepEndDate = "20261123"
    done.PerformedProcedureStepEndTime = "103000"
    st, _ = assoc.send_n_set(done, MPPS, uid)
    result["set_completed"] = st.Status if st else None
    again = Dataset()
    again.PerformedProcedureStepStatus = "IN PROGRESS"
    st, _ = assoc.send_n_set(again, MPPS, uid)
    result["set_after_final"] = st.Status if st else None
    st, _ = assoc.send_n_set(done, MPPS, generate_uid())
    result["set_unknown"] = st.Status if st else None
    missing = Dataset()
    missing.PerformedProcedureStepStartDate = "20261123"
    missing.Modality = "CT"
    st, _ = assoc.send_n_create(missing, MPPS, generate_uid())
    result["create_missing_status"] = st.Status if st else None
    # The association still serves after the refusals.
    other = generate_uid()
    st, _ = assoc.send_n_create(create, MPPS, other)
    result["create_after_refusals"] = st.Status if st else None
    assoc.release()
    result["uid"] = uid
    out(result)


def step(args):
    from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS
    host, port, calling, called, op, uid = args[0], int(args[1]), args[2], args[3], args[4], args[5]
    a = ae(calling)
    a.add_requested_context(MPPS)
    assoc = a.associate(host, port, ae_title=called)
    if not assoc.is_established:
        out({"error": "not established", **reject_info(assoc)})
        return
    ds = Dataset()
    if op == "create":
        ds.PerformedProcedureStepStatus = "IN PROGRESS"
        ds.PerformedProcedureStepStartDate = "20261123"
        ds.PerformedProcedureStepStartTime = "090000"
        ds.Modality = "MR"
        st, _ = assoc.send_n_create(ds, MPPS, uid)
    else:
        ds.PerformedProcedureStepStatus = args[6]
        ds.PerformedProcedureStepEndDate = "20261123"
        ds.PerformedProcedureStepEndTime = "093000"
        st, _ = assoc.send_n_set(ds, MPPS, uid)
    assoc.release()
    out({"status": st.Status if st else None})


def mixed(args):
    from pydicom import dcmread
    host, port, calling, called, path = args[0], int(args[1]), args[2], args[3], args[4]
    a = ae(calling)
    a.add_requested_context("1.2.840.10008.5.1.4.31")  # MWL FIND: not served
    a.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = a.associate(host, port, ae_title=called)
    if not assoc.is_established:
        out({"error": "not established", **reject_info(assoc)})
        return
    contexts = {cx.abstract_syntax: cx.result for cx in assoc.rejected_contexts}
    contexts.update({cx.abstract_syntax: cx.result for cx in assoc.accepted_contexts})
    st = assoc.send_c_store(dcmread(path))
    result = {"contexts": contexts, "store": st.Status if st else None}
    assoc.release()
    out(result)


if __name__ == "__main__":
    cmd, rest = sys.argv[1], sys.argv[2:]
    {"gen": gen, "ctset": ctset, "big": big, "mpps": mpps, "step": step, "assoc": assoc_only, "mixed": mixed}[cmd](rest)
