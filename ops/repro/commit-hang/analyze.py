"""analyze.py WORKDIR FROM TO : per worker, the non-routine events between two HH:MM:SS (local)."""
import json, sys, time, datetime
from pathlib import Path
d = Path(sys.argv[1]); day = datetime.date.today()
def ts(hms):
    h, m, s = map(int, hms.split(':'))
    return datetime.datetime.combine(day, datetime.time(h, m, s)).timestamp()
t1, t2 = ts(sys.argv[2]), ts(sys.argv[3])
for f in sorted(d.glob('w*.events')):
    print('==', f.name)
    lines = [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    open_calls = {}
    for e in lines:
        if not (t1 <= e['t'] <= t2):
            continue
        hm = time.strftime('%H:%M:%S', time.localtime(e['t'])) + ('%.3f' % (e['t'] % 1))[1:]
        if e['ev'] == 'call':
            if e['phase'] == 'start':
                open_calls[e['call']] = e['t']; continue
            open_calls.pop(e['call'], None)
            if e.get('err') is None and e['dur'] < 1.0:
                continue
            print(f"  {hm} {e['call']:<28} dur={e['dur']:7.2f} err={e.get('err')} retr={e.get('retriable')} abort={e.get('abortable')} fatal={e.get('fatal')} {e.get('msg','')[:140]}")
        elif e['ev'] == 'commit_ok':
            if e['took'] > 1.0 or '-v' in sys.argv:
                print(f"  {hm} commit_ok took={e['took']}")
        else:
            print(f"  {hm} {e['ev']} {' '.join(f'{k}={v}' for k,v in e.items() if k not in ('t','w','ev'))}"[:300])
    for c, t in open_calls.items():
        print(f"  STILL RUNNING at window end: {c} since {time.strftime('%H:%M:%S', time.localtime(t))}")
