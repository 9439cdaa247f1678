"""The web page in a real headless Chromium against a real server: upload, webcam, error messages, the model's warning and
out-of-distribution faces, and the API docs with the network cut off.

Needs selenium and Chromium with its driver (Debian: `apt-get install chromium chromium-driver`); skipped otherwise.
"""
import os
import shutil

import numpy as np
import pytest
from serve_fixtures import *  # noqa: F403  (fixtures: registry_dir, server, trained, trained_server)
from serve_fixtures import CLASSES, png

from facemood.images import sample_face

webdriver = pytest.importorskip('selenium.webdriver')
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = os.environ.get('FACEMOOD_CHROMIUM') or shutil.which('chromium') or shutil.which('chromium-browser')
DRIVER = os.environ.get('FACEMOOD_CHROMEDRIVER') or shutil.which('chromedriver')
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromedriver")


def chromium(*args):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--window-size=1200,900',
              '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', *args):  # a fake camera, permission granted
        opts.add_argument(a)
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    drv.set_page_load_timeout(30)
    return drv


@pytest.fixture(scope='module')
def browser():
    drv = chromium()
    yield drv
    drv.quit()


# No network but the server's: every host name but 127.0.0.1 fails to resolve, and anything else would go to a dead proxy.
OFFLINE = ('--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1', '--proxy-server=http://127.0.0.1:9', '--proxy-bypass-list=127.0.0.1')


@pytest.fixture(scope='module')
def offline_browser():
    drv = chromium(*OFFLINE)
    yield drv
    drv.quit()


def wait(browser, cond, timeout=20):
    return WebDriverWait(browser, timeout).until(cond)


def open_page(browser, server):
    browser.get(server.url + '/')
    wait(browser, EC.text_to_be_present_in_element((By.ID, 'model-info'), 'model demo v1'))


def test_upload_shows_label_and_bars(browser, server, tmp_path):
    photo = tmp_path / 'hopper.jpg'
    photo.write_bytes(sample_face('photo'))
    open_page(browser, server)
    browser.find_element(By.ID, 'file').send_keys(str(photo))
    label = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, '#faces .face .label')))
    assert label.text in CLASSES
    bars = browser.find_elements(By.CSS_SELECTOR, '#faces .face .bar')
    assert [b.get_attribute('data-class') for b in bars] == CLASSES
    track = bars[0].find_element(By.CSS_SELECTOR, '.track').size['width']
    widths = [b.find_element(By.CSS_SELECTOR, '.fill').size['width'] for b in bars]   # rendered pixels
    shown = [float(b.find_element(By.CSS_SELECTOR, '.value').text.rstrip('%')) for b in bars]
    assert track > 50 and abs(sum(shown) - 100) < 0.5
    assert all(abs(w - track * p / 100) <= 1.5 for w, p in zip(widths, shown)), (widths, shown, track)
    top = browser.find_element(By.CSS_SELECTOR, '#faces .bar.top').get_attribute('data-class')
    assert top == label.text
    assert '1 face' in browser.find_element(By.ID, 'status').text
    overlay = browser.find_element(By.ID, 'overlay')
    assert (overlay.get_property('width'), overlay.get_property('height')) == (640, 480)  # boxes drawn in image pixels
    # something was drawn on the overlay: the box and label
    painted = browser.execute_script(
        "const c = document.getElementById('overlay'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;")
    assert painted > 500
    assert not browser.find_element(By.ID, 'error').is_displayed()


def test_bad_file_shows_the_services_message(browser, server, tmp_path):
    bad = tmp_path / 'notes.jpg'
    bad.write_text('this is not a picture')
    open_page(browser, server)
    browser.find_element(By.ID, 'file').send_keys(str(bad))
    err = wait(browser, EC.visibility_of_element_located((By.ID, 'error')))
    assert 'notes.jpg' in err.text and 'not an image' in err.text and 'HTTP 400' in err.text


def test_webcam_sends_frames(browser, server):
    "Chromium's fake camera (a test pattern, no face): with face finding off, each frame is one face."
    open_page(browser, server)
    browser.find_element(By.ID, 'detect').click()  # untick: the whole frame is the face
    browser.find_element(By.ID, 'camera').click()
    label = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, '#faces .face .label')))
    assert label.text in CLASSES
    assert browser.find_element(By.ID, 'camera').text == 'Stop webcam'
    wait(browser, lambda b: 'server' in b.find_element(By.ID, 'status').text)
    browser.find_element(By.ID, 'camera').click()
    assert browser.find_element(By.ID, 'camera').text == 'Start webcam'


def resources(browser) -> list:
    "Every URL the page loaded (scripts, styles, images, fetches)."
    return browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")


def test_offline_browser_reaches_only_the_server(offline_browser, server):
    "The network cut works: a CDN is unreachable, the server is not."
    offline_browser.get(server.url + '/health')
    assert '"ready":true' in offline_browser.find_element(By.TAG_NAME, 'body').text.replace(' ', '')
    ok = offline_browser.execute_async_script(
        "const done = arguments[0]; fetch('https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css', {mode: 'no-cors'})"
        ".then(() => done(true), () => done(false));")
    assert ok is False


def test_docs_render_offline(offline_browser, server):
    "Swagger UI lists the operations with no network but the server's; ReDoc renders too."
    offline_browser.get(server.url + '/docs')
    wait(offline_browser, EC.presence_of_element_located((By.CSS_SELECTOR, '.opblock-summary-path')), 60)
    paths = {e.get_attribute('data-path') or e.text for e in offline_browser.find_elements(By.CSS_SELECTOR, '.opblock-summary-path')}
    assert {'/health', '/model', '/predict', '/predict/batch', '/metrics', '/drift'} <= paths, paths
    assert 'facemood' in offline_browser.find_element(By.CSS_SELECTOR, '.info .title').text
    assert all(u.startswith(server.url) for u in resources(offline_browser)), resources(offline_browser)
    offline_browser.get(server.url + '/redoc')
    wait(offline_browser, lambda b: 'Emotions of the faces in one image' in b.find_element(By.TAG_NAME, 'body').text, 60)
    blocked = ' '.join(e['message'] for e in offline_browser.get_log('browser') if 'Content Security Policy' in e['message'])
    outside = [u for u in resources(offline_browser) if not u.startswith(server.url)]
    assert all(u in blocked for u in outside), outside   # ReDoc's maker's logo: the page's policy stops the browser fetching it


def test_untrained_model_warning(browser, server):
    open_page(browser, server)
    warning = wait(browser, EC.visibility_of_element_located((By.ID, 'model-warning')))
    assert warning.text == 'This model is untrained (a demonstration): its answers mean nothing.'


def test_synthetic_model_warning_and_unfamiliar_faces(browser, trained, trained_server, tmp_path):
    "A model trained on synthetic faces: the page says so; a real photo's face is greyed out and labelled, a synthetic face is not."
    from facemood.predictor import Predictor
    browser.get(trained_server.url + '/')
    wait(browser, EC.text_to_be_present_in_element((By.ID, 'model-info'), 'trained on facemood synthetic faces'))
    warning = browser.find_element(By.ID, 'model-warning')
    assert warning.is_displayed() and 'trained on synthetic faces only' in warning.text and 'not meant for real photos' in warning.text
    photo = tmp_path / 'hopper.jpg'
    photo.write_bytes(sample_face('photo'))
    browser.find_element(By.ID, 'file').send_keys(str(photo))
    face = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, '#faces .face')))
    assert 'ood' in face.get_attribute('class').split() and face.get_attribute('data-in-distribution') == 'false'
    assert float(face.value_of_css_property('opacity')) < 1 and 'grayscale' in face.value_of_css_property('filter')
    assert 'do not trust this prediction' in face.find_element(By.CSS_SELECTOR, '.ood-note').text
    assert 'unlike the training faces' in browser.find_element(By.ID, 'status').text
    images = trained.data.get('test')[0]
    ok = Predictor('tiny', registry=trained.registry).predict(images)['in_distribution']
    synthetic = tmp_path / 'synthetic.png'
    synthetic.write_bytes(png(images[int(np.argmax(ok))]))
    browser.find_element(By.ID, 'detect').click()   # untick "find faces": the file is one face crop
    browser.find_element(By.ID, 'file').send_keys(str(synthetic))
    wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, '#faces .face').get_attribute('data-in-distribution') == 'true')
    face = browser.find_element(By.CSS_SELECTOR, '#faces .face')
    assert 'ood' not in face.get_attribute('class').split() and not face.find_elements(By.CSS_SELECTOR, '.ood-note')
    assert float(face.value_of_css_property('opacity')) == 1


@pytest.fixture(scope='module')
def keyed_server(registry_dir, tmp_path_factory):
    "A server with an API key; `.key`."
    from serve_fixtures import server_env

    from facemood.access import add_key
    from facemood.app import serve_in_background
    tmp = tmp_path_factory.mktemp('keyed-page')
    key = add_key('browser', tmp / 'api_keys.json')
    with serve_in_background(registry=registry_dir, log_url='off', env=server_env(tmp, registry_dir)) as srv:
        srv.key = key
        yield srv


def test_page_asks_for_the_key_once_per_tab(browser, keyed_server, tmp_path):
    "Without a key the page asks for one; a wrong key is refused with the service's reason; the right one is kept for the tab."
    photo = tmp_path / 'hopper.jpg'
    photo.write_bytes(sample_face('photo'))
    browser.get(keyed_server.url + '/')
    browser.execute_script("sessionStorage.clear()")
    browser.get(keyed_server.url + '/')
    form = wait(browser, EC.visibility_of_element_located((By.ID, 'key-form')))
    wait(browser, EC.text_to_be_present_in_element((By.ID, 'model-info'), 'model demo v1'))   # /health needs no key
    browser.find_element(By.ID, 'file').send_keys(str(photo))   # an image before the key: it waits for it
    wait(browser, EC.text_to_be_present_in_element((By.ID, 'status'), 'waiting for the API key'))
    browser.find_element(By.ID, 'key').send_keys(keyed_server.key[:-4] + 'AAAA')
    browser.find_element(By.ID, 'key-use').click()
    wait(browser, EC.text_to_be_present_in_element((By.ID, 'key-error'), 'not valid'))
    assert form.is_displayed()
    browser.find_element(By.ID, 'key').send_keys(keyed_server.key)
    browser.find_element(By.ID, 'key-use').click()
    label = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, '#faces .face .label')))   # the waiting image, analysed
    assert label.text in CLASSES and not form.is_displayed()
    assert browser.find_element(By.ID, 'key-state').is_displayed()
    assert browser.find_element(By.ID, 'model-warning').is_displayed(), 'the card (behind the key) was read'
    browser.refresh()   # the same tab keeps the key
    wait(browser, EC.visibility_of_element_located((By.ID, 'key-state')))
    assert not browser.find_element(By.ID, 'key-form').is_displayed()
    browser.find_element(By.ID, 'file').send_keys(str(photo))
    wait(browser, EC.text_to_be_present_in_element((By.ID, 'status'), '1 face'))
    assert keyed_server.key not in keyed_server.output()
    browser.find_element(By.ID, 'key-forget').click()
    wait(browser, EC.visibility_of_element_located((By.ID, 'key-form')))
    assert browser.execute_script("return sessionStorage.length") == 0
