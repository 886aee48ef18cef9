// The model cards shipped in models/, imported at build time so that Workers (no file system)
// and Node read the same calibrations. A newly shipped model is added here.
import brain from '../../models/brain_tumor_mri-darf-b64.card.json';
import kather from '../../models/kather_crc_2016-darf-b64.card.json';
import mednist from '../../models/mednist-darf-b64.card.json';

const cards: unknown[] = [brain, kather, mednist];
export default cards;
