"""The file sources of ``[files]``: the DICOM C-STORE receiver and the watched folders, run
beside the drivers until ``stop``."""

from __future__ import annotations

import asyncio

from edge_agent.files.attachments import AttachmentStore
from edge_agent.files.dicom_scp import DicomReceiver
from edge_agent.files.drop_folder import watch
from edge_agent.settings import Settings
from edge_agent.store.writer import Store


def wanted(settings: Settings) -> bool:
    return settings.files.dicom or bool(settings.files.watch)


def attachment_store(store: Store, settings: Settings) -> AttachmentStore:
    budget = settings.files.budget_mb
    return AttachmentStore(store, budget_bytes=budget * 1024 * 1024 if budget else None)


async def run_file_sources(store: Store, settings: Settings, stop: asyncio.Event) -> None:
    cfg = settings.files
    files = attachment_store(store, settings)
    receiver = None
    if cfg.dicom:
        receiver = DicomReceiver(
            files,
            ae_title=cfg.dicom_ae_title,
            host=cfg.dicom_host,
            port=cfg.dicom_port,
            device=cfg.dicom_device,
            calling_aes=cfg.dicom_calling_aes,
        )
        await asyncio.to_thread(receiver.start)
    try:
        async with asyncio.TaskGroup() as tg:
            for folder in cfg.watch:
                tg.create_task(watch(files, folder, stop), name=f"watch:{folder.device}")
            await stop.wait()
    finally:
        if receiver is not None:
            await asyncio.to_thread(receiver.stop)
