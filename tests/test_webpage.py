"""The web page in a real headless Chromium against a real server: upload, webcam, error messages.

Needs selenium and Chromium with its driver (Debian: `apt-get install chromium chromium-driver`); skipped otherwise.
"""
import os
import shutil

import pytest
from serve_fixtures import *  # noqa: F403  (fixtures: registry_dir, server)
from serve_fixtures import CLASSES

from facemood.images import sample_face

webdriver = pytest.importorskip('selenium.webdriver')
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = os.environ.get('FACEMOOD_CHROMIUM') or shutil.which('chromium') or shutil.which('chromium-browser')
DRIVER = os.environ.get('FACEMOOD_CHROMEDRIVER') or shutil.which('chromedriver')
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromedriver")


@pytest.fixture(scope='module')
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--window-size=1200,900',
              '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'):  # a fake camera, permission granted
        opts.add_argument(a)
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    drv.set_page_load_timeout(30)
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
