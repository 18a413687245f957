from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from registry import api, health, views

router = DefaultRouter()
router.register("models", api.ModelViewSet, basename="model")
router.register("commitments", api.CommitmentViewSet, basename="commitment")
router.register("verifications", api.VerificationViewSet, basename="verification")

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path("login/", views.LoginView.as_view(template_name="registry/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("models/new/", views.model_new, name="model_new"),
    path("models/<uuid:public_id>/", views.model_detail, name="model_detail"),
    path("verifications/new/", views.verification_new, name="verification_new"),
    path("verifications/<uuid:public_id>/", views.verification_detail, name="verification_detail"),
    path("reports/<uuid:public_id>/", views.report_detail, name="report_detail"),
    path("reports/<uuid:public_id>/report.json", views.report_download, name="report_download"),
    path("health", health.health, name="health"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api_schema"), name="api_docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api_schema"), name="api_redoc"),
    path("api/signup", api.SignupView.as_view(), name="api_signup"),
    path("api/token", api.TokenView.as_view(), name="api_token"),
    path("api/reports/<uuid:public_id>", api.report, name="api_report"),
    path("api/reports/<uuid:public_id>/signatures", api.report_signatures,
         name="api_report_signatures"),
    path("api/log/checkpoint", api.checkpoint, name="api_checkpoint"),
    path("api/log/vkey", api.registry_vkey, name="api_vkey"),
    path("api/log/witnesses", api.witness_vkeys, name="api_witnesses"),
    path("api/log/inclusion", api.inclusion_proof, name="api_inclusion"),
    path("api/log/consistency", api.consistency_proof, name="api_consistency"),
    path("api/log/entries/<int:index>", api.log_entry, name="api_log_entry"),
    path("api/", include(router.urls)),
    path("admin/", admin.site.urls),
]

handler400 = "registry.errorpages.bad_request"
handler403 = "registry.errorpages.permission_denied"
handler404 = "registry.errorpages.page_not_found"
handler500 = "registry.errorpages.server_error"
