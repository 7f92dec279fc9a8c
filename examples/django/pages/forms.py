from django import forms


class MessageForm(forms.Form):
    name = forms.CharField(max_length=100)
    message = forms.CharField(widget=forms.Textarea, max_length=2000)


class UploadForm(forms.Form):
    file = forms.FileField()
